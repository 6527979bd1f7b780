"""Replacing serving replicas with overlap: near their time limit, or for a changed spec.

A replica whose allocation ends at ``ends_at_epoch`` gets a replacement submitted
``rotation_lead`` seconds before. A replica started from an older spec of its
service (redeployed with changes) is replaced the same way. Once the
replacement is ready the old one drains (no new requests, in-flight streams
finish) and is cancelled, so requests never see a replica go.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aifactory.control.fleet import LiveReplica, ReplicaState
from aifactory.specs import Deployable

# How long a new-spec replica may wait for an allocation beside the old ones
# before an old one makes room for it.
_SURGE_WAIT_S = 30.0


def due_for_rotation(replica: LiveReplica, service: Deployable, now: float) -> bool:
    """Whether ``replica`` should be replaced now (it keeps serving meanwhile)."""
    if replica.retiring or replica.ends_at_epoch is None:
        return False
    if replica.state is not ReplicaState.READY:
        return False
    return now >= replica.ends_at_epoch - service.rotation_lead_s


def spec_fingerprint(document: Mapping[str, Any]) -> str:
    """A short, stable digest of a spec document: equal specs, equal fingerprints."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def outdated(replica: LiveReplica, fingerprint: str) -> bool:
    """Whether ``replica`` runs an older spec than the one with ``fingerprint``.

    Replicas adopted from before fingerprints were recorded have none and stay.
    """
    return bool(replica.spec_hash) and replica.spec_hash != fingerprint


def replacement_stuck(replicas: Sequence[LiveReplica], clock: float) -> bool:
    """Whether a replacement has waited for its allocation past ``_SURGE_WAIT_S``.

    The scheduler has no room for it beside the replicas it replaces
    (``clock`` is monotonic).
    """
    return any(r.awaiting_allocation(clock, _SURGE_WAIT_S) for r in replicas)
