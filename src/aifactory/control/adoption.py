"""Adoption after a restart: keep the replicas that still run, cancel strays.

Replicas are recorded in the store with their backend handle; Slurm jobs
carry this control plane's tag in their comment. On start, every replica the
store calls live is checked with its backend: a running allocation is
adopted in the state it was in (a ready replica takes traffic at once and is
health-checked as usual), anything else is marked gone. Tagged jobs that no
live replica claims are cancelled, so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aifactory.backends import AllocationState
from aifactory.control.fleet import Fleet, LiveReplica, ReplicaState
from aifactory.errors import AIFactoryError
from aifactory.store import ReplicaRow, Store

if TYPE_CHECKING:
    from aifactory.control.reconciler import Reconciler

logger = logging.getLogger(__name__)

_ADOPTABLE = {
    ReplicaState.SUBMITTED,
    ReplicaState.REGISTERED,
    ReplicaState.HEALTHY,
    ReplicaState.READY,
    ReplicaState.DRAINING,
}


async def adopt(reconciler: Reconciler, store: Store, fleet: Fleet, also_check: set[str]) -> None:
    """Adopt live replicas of an earlier run and cancel stray tagged jobs.

    Args:
        reconciler: Gives access to the backends.
        store: Where the replicas of the earlier run are recorded.
        fleet: Receives the adopted replicas.
        also_check: Backends to search for stray jobs even if no replica names them.
    """
    rows = await asyncio.to_thread(store.replicas, None, True)
    by_backend: dict[str, list[ReplicaRow]] = {}
    for row in rows:
        by_backend.setdefault(row.backend, []).append(row)
    gone: list[str] = []
    for name in sorted({*by_backend, *also_check}):
        rows_here = by_backend.get(name, [])
        try:
            backend = reconciler.backend(name)
            tagged = await backend.tagged()
            handles = [r.handle for r in rows_here if r.handle]
            statuses = await backend.status(handles) if handles else {}
        except AIFactoryError as exc:
            logger.warning("cannot check %s replicas after restart: %s", name, exc)
            gone += [r.id for r in rows_here]
            continue
        for row in rows_here:
            status = statuses.get(row.handle)
            alive = (
                status is not None
                and not status.state.finished
                and (status.state is not AllocationState.UNKNOWN or row.id in tagged)
                and ReplicaState(row.state) in _ADOPTABLE
                and bool(tagged)  # only backends that can tag can adopt
            )
            if not alive:
                gone.append(row.id)
                continue
            assert status is not None
            fleet.replicas[row.id] = LiveReplica(
                id=row.id,
                service=row.service,
                backend=name,
                state=ReplicaState(row.state),
                handle=row.handle,
                base_url=f"http://{row.host}:{row.port}" if row.host else "",
                token_hash=row.token_hash,
                lent=bool(row.drain_token_hash),
                drain_token_hash=row.drain_token_hash,
                spec_hash=row.spec_hash,
                log_path=row.log_path,
                run_as=row.run_as,
                ends_at=status.ends_at,
                node=status.node,
            )
            logger.info("replica %s: adopted (%s, %s %s)", row.id, row.state, name, row.handle)
        for replica_id, handle in tagged.items():
            if replica_id not in fleet.replicas:
                logger.warning("cancelling stray job %s (replica %s unknown)", handle, replica_id)
                await backend.cancel(handle)
    if gone:
        await asyncio.to_thread(
            store.mark_replicas, gone, "gone", "not running when the control plane restarted"
        )
