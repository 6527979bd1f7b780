"""A gateway-only process's view of the fleet, read from the shared store.

Several stateless gateways may serve one factory (``AIFACTORY_ROLE=gateway``)
next to the one control plane that reconciles. They share PostgreSQL, and
each follows the store: every ``interval_s`` it loads the services and the
ready replicas into its own Fleet, which its gateway routes by (a spec is
parsed again only when its row changed: see ``catalog.py``). Limits and
the ledger are shared through the same store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aifactory.control.catalog import ServiceCatalog
from aifactory.control.fleet import Fleet, LiveReplica, ReplicaState
from aifactory.specs import Service
from aifactory.store import Store

__all__ = ["FleetFollower"]

logger = logging.getLogger(__name__)


class FleetFollower:
    """Keeps a Fleet in step with the services and ready replicas in the store."""

    def __init__(self, store: Store, fleet: Fleet, interval_s: float = 0.5) -> None:
        self._store = store
        self._fleet = fleet
        self._interval_s = interval_s
        self._catalog = ServiceCatalog(store)
        self._generation = -1
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the fleet once, then keep following."""
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="fleet-follower")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh()
            except Exception:
                logger.exception("could not read the fleet from the store; retrying")

    async def refresh(self) -> None:
        """Replace the routable services and ready replicas with the store's."""
        catalog = await asyncio.to_thread(self._catalog.refresh)
        if catalog.generation != self._generation:
            self._generation = catalog.generation
            entries = catalog.entries
            self._fleet.set_services(
                (
                    (e.spec, e.created)
                    for e in entries
                    if e.status == "active" and isinstance(e.spec, Service)
                ),
                {e.name: e.tenant_id for e in entries if e.tenant_id is not None},
            )
        ready = {
            replica.id: replica
            for replica in await asyncio.to_thread(self._store.replicas, None, True)
            if replica.state == ReplicaState.READY.value and replica.host
        }
        for replica_id in list(self._fleet.replicas):
            if replica_id not in ready:
                del self._fleet.replicas[replica_id]
        for replica_id, replica in ready.items():
            if replica_id not in self._fleet.replicas:
                self._fleet.replicas[replica_id] = LiveReplica(
                    id=replica.id,
                    service=replica.service,
                    backend=replica.backend,
                    state=ReplicaState.READY,
                    base_url=f"http://{replica.host}:{replica.port}",
                )
                self._fleet.holding.wake(replica.service)
