"""Adoption after a restart: serve the replicas of the earlier run at once, confirm them later.

Replicas are recorded in the store with their backend handle; their
allocations carry this control plane's tag (a Slurm job's comment, a Pod's
labels). On start, before any scheduler is asked, every replica the store
calls live is put back in the fleet as it was, *unconfirmed*: a ready one
takes traffic at once and is health-checked as usual. Once a stack answers
(``stack_watch``), its unconfirmed replicas are settled against the
allocations it lists as ours::

    listed under the replica's id, same handle  -> confirmed, kept as it is
    not listed (the stack answered)             -> gone: it ended meanwhile
    listed, but no live replica claims it       -> a stray: cancelled until confirmed

A stack that cannot be asked settles nothing: "could not ask" never means
"gone", and nothing is started on it meanwhile, so no job runs twice.
Local replicas die with the control plane that started them: they are gone
at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aifactory.control.fleet import Fleet, LiveReplica, ReplicaState
from aifactory.store import ReplicaRow

__all__ = ["Settled", "restore", "settle"]

_ADOPTABLE = {
    ReplicaState.SUBMITTED,
    ReplicaState.REGISTERED,
    ReplicaState.HEALTHY,
    ReplicaState.READY,
    ReplicaState.DRAINING,
}


def restore(rows: Iterable[ReplicaRow], fleet: Fleet) -> list[str]:
    """Put the live replicas of an earlier run back in ``fleet``, unconfirmed.

    Returns:
        The ids of those that cannot live on (local processes, replicas past
        draining): the caller records them as gone.
    """
    gone = []
    for row in rows:
        state = ReplicaState(row.state)
        if row.backend == "local" or not row.handle or state not in _ADOPTABLE:
            gone.append(row.id)
            continue
        fleet.replicas[row.id] = LiveReplica(
            id=row.id,
            service=row.service,
            backend=row.backend,
            state=state,
            handle=row.handle,
            base_url=f"http://{row.host}:{row.port}" if row.host else "",
            token_hash=row.token_hash,
            lent=bool(row.drain_token_hash),
            drain_token_hash=row.drain_token_hash,
            spec_hash=row.spec_hash,
            log_path=row.log_path,
            run_as=row.run_as,
            unconfirmed=True,
        )
    return gone


@dataclass(frozen=True)
class Settled:
    """What one stack's answer settled.

    Attributes:
        confirmed: Replicas whose allocations it lists: kept.
        gone: Replicas whose allocations it does not list: already taken out of the fleet.
        strays: Its allocations of ours that no live replica claims (replica id -> handle).
    """

    confirmed: list[LiveReplica]
    gone: list[LiveReplica]
    strays: dict[str, str]


def settle(stack: str, ours: Mapping[str, str], fleet: Fleet) -> Settled:
    """Settle ``stack``'s unconfirmed replicas against ``ours`` (its ``tagged()`` answer)."""
    confirmed, gone = [], []
    for replica in list(fleet.replicas.values()):
        if replica.backend != stack or not replica.unconfirmed:
            continue
        if ours.get(replica.id) == replica.handle:
            replica.unconfirmed = False
            confirmed.append(replica)
        else:
            del fleet.replicas[replica.id]
            gone.append(replica)
    strays = {
        replica_id: handle
        for replica_id, handle in ours.items()
        if not _claimed(fleet, replica_id, handle)
    }
    return Settled(confirmed, gone, strays)


def _claimed(fleet: Fleet, replica_id: str, handle: str) -> bool:
    """Whether a live replica owns the allocation (one still being submitted has no handle)."""
    replica = fleet.replicas.get(replica_id)
    return replica is not None and replica.handle in ("", handle)
