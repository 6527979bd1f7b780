"""The reconciler: the only place that decides how many replicas exist and where.

Every tick it compares what the specs want with what runs, and acts::

    specs (store) --> want N replicas of S
    fleet         --> have: submitted | registered | healthy | ready | draining
    backends      --> which allocations ended (crash, walltime, cancel)
    health (monitor.py) --> registered -> healthy -> ready; ready -> failed

    fewer than wanted -> submit one (after back-off if the last ones failed)
    more than wanted  -> drain extras; drained (no request in flight) -> cancel -> gone
    lent and preempted (its launcher says so) -> drain at once; the job ends itself
        within GraceTime -> gone, replaced at once (on another stack when it has one)

It only decides; ``lifecycle`` does (launch, register, drain, stop, fail) and
records each step.

It never waits on a stack that does not answer: after a restart it serves
the replicas the store knows at once and adoption settles in the background
(``adoption``, ``stack_watch``); while a stack (or the database) is
unreachable its replicas are kept as they are, nothing is started or
replaced on it (the service's scaling says it is paused, and why), and a job
that must go is cancelled until the stack confirms (``cancellations``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError

from aifactory import metrics
from aifactory.backends import AllocationRequest, Backend
from aifactory.config import Settings
from aifactory.control.accounts import TenantAccounts
from aifactory.control.agents import AgentKeys
from aifactory.control.autoscaler import Autoscaler, ScalingDecision
from aifactory.control.bursting import BurstDecision, Bursting
from aifactory.control.catalog import CatalogEntry, CatalogSnapshot, ServiceCatalog
from aifactory.control.fleet import ACTIVE, STARTING, Fleet, LiveReplica, ReplicaState
from aifactory.control.launch_backoff import LaunchBackoff
from aifactory.control.lending import Preemptions
from aifactory.control.lifecycle import ReplicaLifecycle
from aifactory.control.outages import Outage, Outages
from aifactory.control.placement import (
    burst_stacks,
    move_to,
    place,
    stacks_of,
    surplus_first,
    waiting_burst,
)
from aifactory.control.planner import AllocationPlanner
from aifactory.control.pools import Pools
from aifactory.control.response_retention import ResponseRetention
from aifactory.control.rotation import due_for_rotation, outdated, replacement_stuck
from aifactory.control.stack_watch import StackWatch
from aifactory.control.wakeup import Wakeup
from aifactory.specs import Deployable, FunctionPool, Service
from aifactory.store import Store
from aifactory.tenancy import TenantIdentities, UsageLedger

logger = logging.getLogger(__name__)

# A stack's own command timeout comes first; this margin only catches a hung call.
_QUESTION_MARGIN_S = 5.0


class Reconciler:
    """Drives replicas of every service toward their spec."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        fleet: Fleet,
        ledger: UsageLedger | None = None,
        agent_keys: AgentKeys | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self._agent_keys = agent_keys
        self._settings = settings
        self._store = store
        self._fleet = fleet
        self.planner = AllocationPlanner(settings)
        self.accounts = TenantAccounts(
            store,
            ledger,
            TenantIdentities.from_settings(settings),
        )
        self.backoff = LaunchBackoff()
        self.preemptions = Preemptions()
        self.response_retention = ResponseRetention(store, settings.responses_retention_s)
        self._wakeup = wakeup or Wakeup()
        self._task: asyncio.Task[None] | None = None
        self.autoscaler = Autoscaler()
        self.catalog = ServiceCatalog(store)
        self._generation = -1
        self.specs: dict[str, Deployable] = {}
        self._active: list[Deployable] = []
        self._deleting: list[str] = []
        self._fingerprints: dict[str, str] = {}
        self._pools: Pools | None = None  # the functions broker, when this process runs one
        self.outages = Outages()
        self.watch = StackWatch(
            self.backend,
            self.outages,
            self._adopt,
            settings.slurm_command_timeout_s + _QUESTION_MARGIN_S,
        )
        self.lifecycle = ReplicaLifecycle(
            settings,
            store,
            fleet,
            self.planner,
            self.accounts,
            self.backoff,
            self.preemptions,
            self.watch,
            specs=lambda: self.specs,
            pools=lambda: self._pools,
            wake=self._wakeup.now,
            agent_keys=agent_keys,
        )
        self.bursting = Bursting(self.lifecycle.estimate_request, self.backend)
        # Services whose scaling waits for a stack (or the database) to answer, and why.
        self.paused: dict[str, str] = {}
        self._database = _database_name(settings.effective_database_url)
        if self._database:
            self.outages.watch(self._database)

    # lifecycle of the reconciler itself

    async def start(self) -> None:
        """Route to the replicas the store knows at once; ask their stacks in the background.

        Only the store is read before this returns: no scheduler call stands
        between a restart and serving.
        """
        await self.lifecycle.health.start()
        catalog = await asyncio.to_thread(self._observe)
        self._generation = catalog.generation
        self._take(catalog.entries)
        await self.lifecycle.restore()
        default = self._settings.default_backend
        named = {stack for spec in self._active for stack in stacks_of(spec, default)}
        self.watch.add(named | {r.backend for r in self._fleet.replicas.values()}, adopting=True)
        await self.watch.start()
        self.wake()
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        """Stop the loop and every replica, draining in-flight requests first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.watch.stop()
        await self.lifecycle.stop_all()
        await self.planner.aclose()
        await self.lifecycle.health.stop()

    def wake(self) -> None:
        """Run the next tick now rather than at the next interval."""
        self._wakeup.now()

    def serve_function_pools(self, pools: Pools) -> None:
        """Run FunctionPools' workers through ``pools`` (the functions hub).

        Given after construction: the hub is built after the control plane,
        because it needs the plane's wake-up.
        """
        self._pools = pools

    # what the control plane reads (its summaries, ``aif status``, ``/healthz``)

    @property
    def pools(self) -> Pools | None:
        """The functions hub that runs FunctionPools' workers (None: this process runs none)."""
        return self._pools

    def spec(self, name: str) -> Deployable | None:
        """The parsed spec ``name`` is converged to (None: not deployed, or being deleted)."""
        return self.specs.get(name)

    def waiting_on(self, name: str) -> str:
        """Why ``name`` starts no replica now: its scaling is paused, else its launch back-off."""
        paused = self.paused.get(name)
        if paused:
            return f"scaling paused: {paused}"
        return self.backoff.reasons.get(name, "")

    def scaling_paused(self) -> dict[str, str]:
        """The services whose scaling waits for a stack (or the database), and why."""
        return dict(self.paused)

    def scaling(self, name: str) -> tuple[int | None, list[ScalingDecision], list[BurstDecision]]:
        """The count wanted now, the recent scaling decisions, and where bursts went."""
        return (
            self.autoscaler.wanted_now(name),
            self.autoscaler.decisions(name),
            self.bursting.decisions(name),
        )

    def outages_now(self) -> list[Outage]:
        """What cannot be asked now (stacks, the database), since when."""
        return self.outages.current()

    def cancels_pending(self) -> int:
        """Cancels not yet confirmed by their stacks."""
        return len(self.lifecycle.cancellations.pending)

    async def planned_request(self, service: Deployable) -> tuple[AllocationRequest, Backend]:
        """What a new replica of ``service`` would ask its first stack for (never submitted).

        Raises:
            ConfigError: its tenant has no identity to run it as.
        """
        catalog = await asyncio.to_thread(self.catalog.refresh)
        owners = {e.name: e.tenant_id for e in catalog.entries}
        await asyncio.to_thread(self.accounts.refresh, owners, True)
        identity = await asyncio.to_thread(self.accounts.identity, service.name)
        request = self.lifecycle.request(service, f"{service.name}-XXXXXX", identity)
        return request, self.backend(service.backend or self._settings.default_backend)

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait(self._settings.reconcile_interval_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile tick failed; retrying next tick")

    # one tick

    async def tick(self) -> None:
        """Observe, then act once."""
        catalog = await self._observe_store()
        if catalog is not None and catalog.generation != self._generation:
            self._generation = catalog.generation
            self._take(catalog.entries)
        active, deleting = self._active, self._deleting
        # Act on new wants first: a deploy must not wait behind the status poll.
        for spec in active:
            await self._converge(spec)
        await self.lifecycle.follow_allocations()
        await self.lifecycle.health.check()
        for name in deleting:
            await self._remove(name)
        for replica in list(self._fleet.replicas.values()):
            orphaned = replica.service not in self.specs and replica.service not in deleting
            if orphaned and replica.state is not ReplicaState.DRAINING:
                await self.lifecycle.drain(replica, "its service is gone")
        await self.lifecycle.drain_step()
        self.response_retention.sweep_if_due()
        self._export_metrics()

    async def _observe_store(self) -> CatalogSnapshot | None:
        """The stored services; None while the database does not answer (the last are kept)."""
        asked_at = time.time()
        try:
            catalog = await asyncio.to_thread(self._observe)
        except DBAPIError as exc:
            if not self._database:
                raise
            self.outages.failed(self._database, str(exc.orig or exc).strip(), asked_at)
            return None
        if self._database:
            self.outages.answered(self._database)
        return catalog

    def _observe(self) -> CatalogSnapshot:
        """The stored services, and who owns them (blocking: one trip to a thread)."""
        catalog = self.catalog.refresh()
        self.accounts.refresh({e.name: e.tenant_id for e in catalog.entries})
        return catalog

    def _take(self, entries: tuple[CatalogEntry, ...]) -> None:
        """Adopt a changed catalog: the specs to converge, to delete, and to route to."""
        self._active = [e.spec for e in entries if e.status != "deleting" and e.spec is not None]
        self._deleting = [e.name for e in entries if e.status == "deleting"]
        self.specs = {spec.name: spec for spec in self._active}
        # Of the stored documents, as the API's summaries compute them too.
        self._fingerprints = {e.name: e.fingerprint for e in entries}
        self._fleet.set_services(
            (
                (e.spec, e.created)
                for e in entries
                if e.status != "deleting" and isinstance(e.spec, Service)
            ),
            self.accounts.owner_ids(),
        )

    def _blocker(self, service: Deployable) -> str:
        """Why no replica of ``service`` may start now ("" when none stops it)."""
        stacks = stacks_of(service, self._settings.default_backend)
        self.watch.add(stacks)
        database = self.outages.of(self._database) if self._database else None
        return database.message if database else self.watch.blocker(stacks)

    async def _converge(self, service: Deployable) -> None:
        fingerprint = self._fingerprints[service.name]
        blocked = self._blocker(service)
        if blocked:
            if service.name not in self.paused:
                logger.warning("service %s: scaling paused: %s", service.name, blocked)
            self.paused[service.name] = blocked
        elif self.paused.pop(service.name, None):
            logger.info("service %s: scaling resumed", service.name)
        for replica in self._fleet.of_service(service.name):
            if replica.state in STARTING and outdated(replica, fingerprint):
                await self.lifecycle.drain(
                    replica, "its service's spec changed before it was ready"
                )
        live = [r for r in self._fleet.of_service(service.name) if r.state in ACTIVE]
        now = time.time()
        for replica in live:
            if replica.retiring:
                continue
            # Overlap: the replacement starts while this one still serves.
            if outdated(replica, fingerprint):
                replica.retiring = True
                logger.info("replica %s: spec changed; starting its replacement", replica.id)
            elif due_for_rotation(replica, service, now):
                replica.retiring = True
                logger.info("replica %s: time limit near; starting its replacement", replica.id)
        replicas = [r for r in live if not r.retiring]
        ready = sum(1 for r in replicas if r.state is ReplicaState.READY)
        wanted = self._wanted(service)
        for old in [r for r in live if r.retiring and r.state is ReplicaState.READY]:
            if ready >= wanted:
                reason = (
                    "replaced by a replica of the new spec"
                    if outdated(old, fingerprint)
                    else "replaced before its time limit"
                )
                await self.lifecycle.drain(old, reason)
        no_room = False
        if len(replicas) < wanted:
            if not blocked and self.backoff.may_launch(service.name):
                stack = await self._place(service, replicas)
                no_room = await self.lifecycle.launch(service, stack, fingerprint) == "no room"
        elif len(replicas) > wanted:
            for replica in surplus_first(service, replicas)[: len(replicas) - wanted]:
                await self.lifecycle.drain(replica, "scaled down")
        elif not blocked:
            await self._move_waiting(service, replicas)
        if not blocked and (no_room or replacement_stuck(replicas, time.monotonic())):
            await self._replace_in_place(service.name, fingerprint)

    async def _replace_in_place(self, service: str, fingerprint: str) -> None:
        """No room to start a new-spec replica beside the old ones: drain one old one first.

        One at a time: the next goes only once the last has drained away.
        """
        replicas = self._fleet.of_service(service)
        if any(r.state is ReplicaState.DRAINING for r in replicas):
            return
        old = next(
            (r for r in replicas if r.state is ReplicaState.READY and outdated(r, fingerprint)),
            None,
        )
        if old is not None:
            await self.lifecycle.drain(old, "no room to start its replacement beside it")

    async def _move_waiting(self, service: Deployable, replicas: list[LiveReplica]) -> None:
        """Move a burst replica still waiting to a stack that can now start it sooner."""
        now = time.time()
        waiting = waiting_burst(service, replicas, now, time.monotonic())
        if waiting is None or not self.bursting.due(service.name):
            return
        others = [
            s for s in stacks_of(service, self._settings.default_backend) if s != waiting.backend
        ]
        delays = await self.bursting.estimates(service, others)
        target = move_to(waiting, delays, now)
        if target:
            self.bursting.record(service.name, target, delays, moved_from=waiting.backend)
            await self.lifecycle.drain(waiting, f"moved: {target} can start it sooner")
            await self.lifecycle.launch(service, target, self._fingerprints[service.name])

    async def _place(self, service: Deployable, replicas: list[LiveReplica]) -> str:
        default, avoid = self._settings.default_backend, self.preemptions.avoid(service.name)
        candidates = burst_stacks(service, replicas, default, avoid)
        if len(candidates) < 2:
            return place(service, replicas, default, avoid)
        delays = await self.bursting.estimates(service, candidates)
        stack = place(service, replicas, default, avoid, delays)
        self.bursting.record(service.name, stack, delays)
        return stack

    def _wanted(self, service: Deployable) -> int:
        """The autoscaler's count for ``service``, from its live load."""
        if isinstance(service, FunctionPool):
            work = self._pools.load(service.name) if self._pools else None
            load, queued = (work.running, work.queued) if work else (0, 0)
            last_request = work.last_submit if work else None
        else:
            load = self._fleet.take_peak(service.name)
            queued = self._fleet.holding.length(service.name)
            last_request = self._fleet.last_request.get(service.name)
        history = self.autoscaler.decisions(service.name)
        last = history[-1] if history else None
        wanted = self.autoscaler.wanted(service, load, queued, last_request=last_request)
        history = self.autoscaler.decisions(service.name)
        if history and history[-1] is not last:  # at most one decision per call
            decision = history[-1]
            direction = "up" if decision.after > decision.before else "down"
            metrics.SCALING_EVENTS.labels(service.name, direction).inc()
            logger.info(
                "service %s: scale %d -> %d (%s)",
                service.name, decision.before, decision.after, decision.reason,
            )  # fmt: skip
        return wanted

    async def _remove(self, name: str) -> None:
        replicas = self._fleet.of_service(name)
        for replica in replicas:
            if replica.state is not ReplicaState.DRAINING:
                await self.lifecycle.drain(replica, "service deleted")
        if not replicas:
            await asyncio.to_thread(self._store.remove_service, name)
            self.backoff.forget(name)
            self.preemptions.forget(name)
            self.bursting.forget(name)
            self.autoscaler.forget(name)
            logger.info("service %s: deleted", name)

    # the stacks

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, built on first use."""
        return self.planner.backend(name)

    async def _adopt(self, stack: str, ours: Mapping[str, str]) -> None:
        """The watch's answers go to the lifecycle (built after the watch it reports to)."""
        await self.lifecycle.adopt(stack, ours)

    def _export_metrics(self) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for replica in self._fleet.replicas.values():
            key = (replica.service, replica.state.value, replica.backend)
            counts[key] = counts.get(key, 0) + 1
        metrics.set_replica_counts(counts)


def _database_name(url: str) -> str:
    """``postgresql`` for a PostgreSQL store, whose outages are watched; "" for SQLite."""
    name = make_url(url).get_backend_name()
    return name if name == "postgresql" else ""
