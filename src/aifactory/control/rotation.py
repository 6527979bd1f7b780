"""Overlapping walltime rotation: when a replica's replacement should start.

A replica whose allocation ends at ``ends_at`` gets a replacement submitted
``rotation_lead`` seconds before; once the replacement is ready the old one
drains (no new requests, in-flight streams finish) and is cancelled, so
requests never see a replica reach its time limit.
"""

from __future__ import annotations

from aifactory.control.fleet import LiveReplica, ReplicaState
from aifactory.specs import Deployable


def due_for_rotation(replica: LiveReplica, service: Deployable, now: float) -> bool:
    """Whether ``replica`` should be replaced now (it keeps serving meanwhile)."""
    if replica.retiring or replica.ends_at is None:
        return False
    if replica.state is not ReplicaState.READY:
        return False
    return now >= replica.ends_at - service.rotation_lead_s
