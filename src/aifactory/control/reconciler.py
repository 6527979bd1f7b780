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

It never waits on a stack that does not answer: after a restart it serves
the replicas the store knows at once and adoption settles in the background
(``adoption``, ``stack_watch``); while a stack (or the database) is
unreachable its replicas are kept as they are, nothing is started or
replaced on it (the service's scaling says it is paused, and why), and a job
that must go is cancelled until the stack confirms (``cancellations``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Literal

from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError

from aifactory import metrics
from aifactory.backends import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    Backend,
)
from aifactory.config import Settings
from aifactory.control.accounts import TenantAccounts
from aifactory.control.adoption import restore, settle
from aifactory.control.agents import AgentKeys
from aifactory.control.autoscaler import Autoscaler
from aifactory.control.bursting import Bursting
from aifactory.control.cancellations import Cancellations
from aifactory.control.catalog import CatalogEntry, CatalogSnapshot, ServiceCatalog
from aifactory.control.fleet import ACTIVE, STARTING, Fleet, LiveReplica, ReplicaState
from aifactory.control.launch_backoff import LaunchBackoff
from aifactory.control.lending import Preemptions, drained_replica, is_lent
from aifactory.control.monitor import HealthMonitor
from aifactory.control.outages import Outages
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
from aifactory.control.replica_secrets import discard_replica_secrets, prepare_replica
from aifactory.control.rotation import due_for_rotation, outdated, replacement_stuck
from aifactory.control.stack_watch import StackWatch
from aifactory.errors import (
    AIFactoryError,
    BackendError,
    CapacityExceeded,
    ConfigError,
    Conflict,
    NotFound,
    SchedulerUnreachable,
    Unauthorized,
)
from aifactory.identity import Identity
from aifactory.specs import Agent, Deployable, FunctionPool, Service
from aifactory.store import Store
from aifactory.tenancy import TenantIdentities, UsageLedger, hash_key

logger = logging.getLogger(__name__)

LaunchOutcome = Literal["submitted", "no room", "refused"]

_CAPACITY_RETRY_S = 5.0
_BUDGET_RETRY_S = 30.0
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
        self.bursting = Bursting(self._estimate_request, self.backend)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cancels: set[asyncio.Task[None]] = set()
        self.autoscaler = Autoscaler()
        self.catalog = ServiceCatalog(store)
        self._generation = -1
        self.specs: dict[str, Deployable] = {}
        self._active: list[Deployable] = []
        self._deleting: list[str] = []
        self._fingerprints: dict[str, str] = {}
        self.pools: Pools | None = None  # the functions broker, when this process runs one
        self.health = HealthMonitor(fleet, lambda: self.specs, lambda: self.pools, self)
        self.outages = Outages()
        self.watch = StackWatch(
            self.backend,
            self.outages,
            self._settle,
            settings.slurm_command_timeout_s + _QUESTION_MARGIN_S,
        )
        self.cancellations = Cancellations(self.backend, self._call_failed)
        # Services whose scaling waits for a stack (or the database) to answer, and why.
        self.paused: dict[str, str] = {}
        self._database = _database_name(settings.effective_database_url)
        if self._database:
            self.outages.watch(self._database)
        fleet.holding.on_demand = lambda _service: self.wake()

    # lifecycle of the reconciler itself

    async def start(self) -> None:
        """Route to the replicas the store knows at once; ask their stacks in the background.

        Only the store is read before this returns: no scheduler call stands
        between a restart and serving.
        """
        await self.health.start()
        catalog = await asyncio.to_thread(self._observe)
        self._generation = catalog.generation
        self._take(catalog.entries)
        rows = await asyncio.to_thread(self._store.replicas, None, True)
        gone = restore(rows, self._fleet)
        if gone:
            reason = "not running when the control plane restarted"
            await asyncio.to_thread(self._store.mark_replicas, gone, "gone", reason)
        default = self._settings.default_backend
        named = {stack for spec in self._active for stack in stacks_of(spec, default)}
        self.watch.add(named | {r.backend for r in self._fleet.replicas.values()}, adopting=True)
        for replica in self._fleet.replicas.values():
            logger.info(
                "replica %s: restored (%s, %s %s); its stack confirms it in the background",
                replica.id, replica.state.value, replica.backend, replica.handle,
            )  # fmt: skip
            if self.pools is not None and replica.token_hash and replica.base_url:
                # A registered replica keeps a token only if it is a pool's worker.
                self.pools.expect(replica.id, replica.token_hash)
        await self.watch.start()
        self.wake()
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        """Stop the loop and every replica, draining in-flight requests first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.watch.stop()
        live = list(self._fleet.replicas.values())
        for replica in live:
            replica.state = ReplicaState.DRAINING
        deadline = time.monotonic() + self._settings.drain_timeout_s
        while any(r.in_flight for r in live) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        # Cancels not confirmed by now are the next run's: it finds their jobs by tag.
        await self.cancellations.close()
        await asyncio.gather(*self._cancels, return_exceptions=True)
        await asyncio.gather(
            *(
                self.backend(r.backend).cancel(r.handle)
                for r in self._fleet.replicas.values()
                if r.handle
            ),
            return_exceptions=True,
        )
        # Charged now, not left to the next run: the scheduler gets a few seconds to record them.
        await asyncio.gather(
            *(
                self.accounts.charge_end(r, self._gpus(r), self.backend(r.backend), tries=3)
                for r in live
            ),
            return_exceptions=True,
        )
        await self.planner.aclose()
        ids = [r.id for r in live]
        if ids:
            await asyncio.to_thread(self._store.mark_replicas, ids, "gone", "control plane stopped")
        self._fleet.replicas.clear()
        await self.health.stop()

    def wake(self) -> None:
        """Run the next tick now rather than at the next interval."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.reconcile_interval_s)
            self._wake.clear()
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
        await self._poll_allocations()
        await self.health.check()
        for name in deleting:
            await self._remove(name)
        for replica in list(self._fleet.replicas.values()):
            orphaned = replica.service not in self.specs and replica.service not in deleting
            if orphaned and replica.state is not ReplicaState.DRAINING:
                await self._transition(replica, ReplicaState.DRAINING, "its service is gone")
        await self._drain_step()
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
                await self._transition(
                    replica, ReplicaState.DRAINING, "its service's spec changed before it was ready"
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
                await self._transition(old, ReplicaState.DRAINING, reason)
        no_room = False
        if len(replicas) < wanted:
            if not blocked and self.backoff.may_launch(service.name):
                stack = await self._place(service, replicas)
                no_room = await self._launch(service, stack) == "no room"
        elif len(replicas) > wanted:
            for replica in surplus_first(service, replicas)[: len(replicas) - wanted]:
                await self._transition(replica, ReplicaState.DRAINING, "scaled down")
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
            await self._transition(
                old, ReplicaState.DRAINING, "no room to start its replacement beside it"
            )

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
            await self._transition(
                waiting, ReplicaState.DRAINING, f"moved: {target} can start it sooner"
            )
            await self._launch(service, target)

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
            work = self.pools.load(service.name) if self.pools else None
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
                await self._transition(replica, ReplicaState.DRAINING, "service deleted")
        if not replicas:
            await asyncio.to_thread(self._store.remove_service, name)
            self.backoff.forget(name)
            self.preemptions.forget(name)
            self.bursting.forget(name)
            self.autoscaler.forget(name)
            logger.info("service %s: deleted", name)

    # launching and registration

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, built on first use."""
        return self.planner.backend(name)

    def allocation_request(
        self,
        service: Deployable,
        replica_id: str,
        identity: Identity | None,
        stack: str | None = None,
    ) -> AllocationRequest:
        """A new replica of ``service``, run as ``identity`` (on ``stack``, else its first)."""
        return self.planner.request(service, replica_id, identity, self.pools, stack)

    def _estimate_request(self, service: Deployable, stack: str) -> AllocationRequest:
        """What a new replica of ``service`` would ask ``stack`` for (never submitted)."""
        try:
            identity: Identity | None = self.accounts.identity(service.name)
        except ConfigError:
            identity = None  # its launch will be refused with the reason; estimate anyway
        request = self.allocation_request(service, f"{service.name}-estimate", identity, stack)
        return self.accounts.with_defaults(request)

    async def _launch(self, service: Deployable, stack: str) -> LaunchOutcome:
        """Start one replica of ``service`` on ``stack``, unless something stops it."""
        replica_id = f"{service.name}-{secrets.token_hex(3)}"
        try:
            identity = await asyncio.to_thread(self.accounts.identity, service.name)
            request = self.accounts.with_defaults(
                self.allocation_request(service, replica_id, identity, stack)
            )
            backend = self.backend(stack)
        except AIFactoryError as exc:
            self.backoff.failed(service.name, str(exc))
            return "refused"
        refusal = await asyncio.to_thread(
            self.accounts.budget_refusal, service.name, service, list(self._fleet.replicas.values())
        )
        if refusal is not None:
            self.backoff.wait(service.name, refusal, _BUDGET_RETRY_S)
            return "refused"
        agent_env = None
        if isinstance(service, Agent):
            agent_env = self._agent_keys.secret_env(service.name) if self._agent_keys else ""
        lent = is_lent(service, backend.name)
        try:
            hashes = await asyncio.to_thread(
                prepare_replica,
                self._settings.privilege,
                request,
                agent_env=agent_env,
                lent=lent,
                pool_worker=isinstance(service, FunctionPool) and self.pools is not None,
            )
        except (OSError, AIFactoryError) as exc:
            reason = f"could not hand its secrets to {identity.user}: {exc}"
            self.backoff.failed(service.name, reason)
            return "refused"

        replica = LiveReplica(
            replica_id,
            service.name,
            backend.name,
            token_hash=hashes.token,
            worker_token_hash=hashes.worker_token,
            drain_token_hash=hashes.drain_token,
            spec_hash=self._fingerprints[service.name],
            lent=lent,
            log_path=str(request.log_path),
            run_as=identity.user,
        )
        if hashes.worker_token and self.pools is not None:
            self.pools.expect(replica_id, hashes.worker_token)
        replica.timeline["requested"] = time.time()
        self._fleet.replicas[replica_id] = replica
        asked_at = time.time()
        try:
            replica.handle = await backend.submit(request)
        except BackendError as exc:
            del self._fleet.replicas[replica_id]
            await asyncio.to_thread(discard_replica_secrets, self._settings.privilege, request)
            if self.pools is not None:
                self.pools.forget(replica_id)
            if isinstance(exc, CapacityExceeded):
                self.backoff.wait(service.name, str(exc), _CAPACITY_RETRY_S)
                return "no room"
            self._call_failed(backend.name, exc, asked_at)
            self.backoff.failed(service.name, str(exc))
            return "refused"
        self.backoff.submitted(service.name)
        replica.timeline["submitted"] = time.time()
        await asyncio.to_thread(
            self._store.add_replica,
            id=replica_id,
            service=service.name,
            backend=backend.name,
            state=ReplicaState.SUBMITTED.value,
            handle=replica.handle,
            token_hash=replica.token_hash,
            drain_token_hash=replica.drain_token_hash,
            spec_hash=replica.spec_hash,
            log_path=str(request.log_path),
            run_as=identity.user,
        )
        logger.info(
            "replica %s: submitted to %s as %s, running as %s",
            replica_id,
            backend.name,
            replica.handle,
            identity.describe(),
        )
        return "submitted"

    async def register(
        self, replica_id: str, token: str, host: str, port: int, launched_at: float | None = None
    ) -> None:
        """Accept a launcher's report of where its engine listens (once).

        Raises:
            NotFound: no such live replica.
            Unauthorized: wrong or already used token.
            Conflict: the replica is past registration.
        """
        replica = self._fleet.replicas.get(replica_id)
        if replica is None:
            raise NotFound(f"replica {replica_id!r} is not live.")
        if not replica.token_hash or not hmac.compare_digest(replica.token_hash, hash_key(token)):
            raise Unauthorized(f"registration token for replica {replica_id!r} is not valid.")
        if replica.state is not ReplicaState.SUBMITTED:
            raise Conflict(f"replica {replica_id!r} is {replica.state.value}, not submitted.")
        # The launcher's token is spent; a pool's worker token is kept (hashed)
        # so that a restarted control plane can admit the worker again.
        replica.token_hash = replica.worker_token_hash
        replica.base_url = f"http://{host}:{port}"
        if launched_at is not None:
            replica.timeline["launched"] = launched_at
        await self._transition(
            replica,
            ReplicaState.REGISTERED,
            f"engine at {host}:{port}",
            host=host,
            port=port,
            token_hash=replica.token_hash,
        )
        self._background(self.health.watch_startup(replica))

    async def preempted(self, replica_id: str, token: str) -> int:
        """A lent replica's launcher says Slurm is taking its node back: drain it now.

        Called again while the launcher waits; returns the requests (or a
        pool's tasks) still in flight on the replica.

        Raises:
            NotFound: no such live replica.
            Unauthorized: not the replica's drain token.
        """
        replica = drained_replica(self._fleet.replicas.get(replica_id), replica_id, token)
        if not replica.preempted:
            replica.preempted = True
            self.preemptions.note(replica.service, replica.backend)
            if replica.state is not ReplicaState.DRAINING:
                await self._transition(
                    replica, ReplicaState.DRAINING, "preempted: draining within its grace time"
                )
            self.wake()  # its replacement starts now, not at the next interval
        return self._busy(replica)

    # observing

    async def _poll_allocations(self) -> None:
        by_backend: dict[str, list[LiveReplica]] = {}
        for replica in self._fleet.replicas.values():
            if replica.handle:
                by_backend.setdefault(replica.backend, []).append(replica)
        for name, replicas in by_backend.items():
            if not self.watch.answers(name):
                continue  # kept as they are until it answers (the watch asks it)
            asked_at = time.time()
            statuses = await self.backend(name).status([r.handle for r in replicas])
            for replica in replicas:
                status = statuses.get(replica.handle) or AllocationStatus(AllocationState.UNKNOWN)
                if not status.answered:
                    self.watch.failed(name, status.reason, asked_at)
                elif status.state is AllocationState.UNKNOWN:
                    self.watch.doubt(name)  # it knows no such job: the watch settles that
                if status.state is AllocationState.UNKNOWN or replica.stopping:
                    continue
                if not status.state.finished:
                    if status.state is AllocationState.RUNNING:
                        replica.timeline.setdefault("running", time.time())
                    replica.ends_at_epoch = status.ends_at or replica.ends_at_epoch
                    replica.starts_at_epoch = status.starts_at
                    replica.node = status.node or replica.node
                    replica.pending_reason = status.reason
                    continue
                if status.state is AllocationState.PREEMPTED or replica.preempted:
                    # The site took its capacity back: an expected end, not a failure.
                    self.preemptions.note(replica.service, replica.backend)
                    await self._transition(
                        replica, ReplicaState.GONE, f"preempted ({status.reason})"
                    )
                    self.wake()
                elif replica.state is ReplicaState.DRAINING:
                    await self._transition(replica, ReplicaState.GONE, status.reason)
                elif status.state is AllocationState.TIMEOUT:
                    # Reaching the time limit is the normal end of an allocation, not a failure.
                    await self._transition(replica, ReplicaState.GONE, status.reason)
                else:
                    await self._fail(replica, f"allocation ended: {status.reason}")

    # acting

    async def _drain_step(self) -> None:
        now = time.monotonic()
        for replica in list(self._fleet.replicas.values()):
            if replica.state is not ReplicaState.DRAINING or replica.stopping:
                continue
            overdue = now - replica.changed_monotonic > self._settings.drain_timeout_s
            if replica.preempted and not overdue:
                continue  # its launcher ends the job within the grace time
            if self._busy(replica) == 0 or overdue:
                replica.stopping = True
                self._background(self._stop(replica))

    def _gpus(self, replica: LiveReplica) -> int:
        spec = self.specs.get(replica.service)
        return spec.resources.gpus if spec else 0

    def _busy(self, replica: LiveReplica) -> int:
        """Requests (or, for a pool's worker, tasks) the replica still serves."""
        if isinstance(self.specs.get(replica.service), FunctionPool) and self.pools is not None:
            return self.pools.running(replica.id)
        return replica.in_flight

    async def _stop(self, replica: LiveReplica) -> None:
        """Cancel a drained replica's allocation; it is gone once its stack confirms."""
        if replica.handle and not await self.cancellations.cancel(replica.backend, replica.handle):
            return  # stopping: the next run cancels it by its tag
        await self._transition(replica, ReplicaState.GONE, "drained and stopped")
        self.wake()

    def _call_failed(self, stack: str, error: Exception, asked_at: float) -> None:
        """A call to ``stack`` failed: unanswered, an outage; refused, a doubt the watch settles."""
        if isinstance(error, SchedulerUnreachable):
            self.watch.failed(stack, error.message, asked_at)
        else:
            self.watch.doubt(stack)

    def _cancel(self, replica: LiveReplica) -> None:
        self.cancellations.cancel(replica.backend, replica.handle)

    async def _settle(self, stack: str, ours: Mapping[str, str]) -> None:
        """``stack`` answered with the allocations it runs for us: settle adoption, end strays."""
        settled = settle(stack, ours, self._fleet)
        for replica in settled.confirmed:
            logger.info("replica %s: adopted (%s %s)", replica.id, stack, replica.handle)
        for replica in settled.gone:
            await self._transition(
                replica, ReplicaState.GONE, f"its allocation ended while {stack} was not asked"
            )
        for replica_id, handle in settled.strays.items():
            logger.warning("cancelling stray %s %s (replica %s unknown)", stack, handle, replica_id)
            self.cancellations.cancel(stack, handle)
        if settled.gone or settled.confirmed:
            self.wake()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _fail(self, replica: LiveReplica, reason: str) -> None:
        if replica.handle:
            self._cancel(replica)
        self.backoff.failed(replica.service, reason)
        await self._transition(replica, ReplicaState.FAILED, reason)

    async def _transition(
        self, replica: LiveReplica, state: ReplicaState, reason: str, **fields: Any
    ) -> None:
        logger.info(
            "replica %s: %s -> %s (%s)", replica.id, replica.state.value, state.value, reason
        )
        replica.state = state
        replica.changed_monotonic = time.monotonic()
        replica.timeline[state.value] = time.time()
        if self.pools is not None and state is ReplicaState.DRAINING:
            self.pools.drain(replica.id)
        if state in (ReplicaState.GONE, ReplicaState.FAILED):
            self._fleet.replicas.pop(replica.id, None)
            backend = self.backend(replica.backend)
            self._background(self.accounts.charge_end(replica, self._gpus(replica), backend))
            if self.pools is not None:
                self.pools.forget(replica.id)
        await asyncio.to_thread(
            self._store.update_replica, replica.id, state=state.value, reason=reason, **fields
        )

    # the monitor's Lifecycle

    async def transition(
        self, replica: LiveReplica, state: ReplicaState, reason: str, **fields: Any
    ) -> None:
        """Move ``replica`` to ``state`` (the health monitor's way in)."""
        await self._transition(replica, state, reason, **fields)

    async def fail(self, replica: LiveReplica, reason: str) -> None:
        """Fail ``replica``: cancel its allocation and back off its service."""
        await self._fail(replica, reason)

    def ready(self, service: str) -> None:
        """A replica of ``service`` became ready: its failures are forgiven, held requests go."""
        self.backoff.forgive(service)
        self._fleet.holding.wake(service)

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
