"""The replica lifecycle: doing what the reconciler decided, one replica at a time.

The reconciler decides how many replicas each service has and where; this
module carries each replica through its life and records every step::

    launch     secrets handed over, allocation submitted          -> submitted
    register   its launcher reports where the engine listens      -> registered
    (monitor)  health checks                                      -> healthy -> ready
    follow     its stack reports the allocation ended             -> gone | failed
    drain      no new requests; in flight (or a pool's tasks) 0   -> cancelled -> gone
    preempted  a lent replica's node is taken back: drain at once
    adopt      a stack's answer after a restart settles restored replicas

It implements the health monitor's ``Lifecycle`` (``transition``, ``fail``,
``ready``): the monitor reports health, the lifecycle acts on it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal

from aifactory.backends import AllocationRequest, AllocationState, AllocationStatus
from aifactory.config import Settings
from aifactory.control.accounts import TenantAccounts
from aifactory.control.adoption import restore, settle
from aifactory.control.agents import AgentKeys
from aifactory.control.cancellations import Cancellations
from aifactory.control.fleet import Fleet, LiveReplica, ReplicaState
from aifactory.control.launch_backoff import LaunchBackoff
from aifactory.control.lending import Preemptions, drained_replica, is_lent
from aifactory.control.monitor import HealthMonitor
from aifactory.control.planner import AllocationPlanner
from aifactory.control.pools import Pools
from aifactory.control.replica_secrets import discard_replica_secrets, prepare_replica
from aifactory.control.stack_watch import StackWatch
from aifactory.errors import (
    AIFactoryError,
    BackendError,
    CapacityExceeded,
    ConfigError,
    Conflict,
    NotFound,
    Unauthorized,
)
from aifactory.identity import Identity
from aifactory.specs import Agent, Deployable, FunctionPool
from aifactory.store import Store
from aifactory.tenancy import hash_key

__all__ = ["LaunchOutcome", "ReplicaLifecycle"]

logger = logging.getLogger(__name__)

LaunchOutcome = Literal["submitted", "no room", "refused"]

_CAPACITY_RETRY_S = 5.0
_BUDGET_RETRY_S = 30.0


class ReplicaLifecycle:
    """Launches, registers, drains, stops and fails replicas, and records each step.

    Args:
        settings: The control plane's settings (privilege, drain timeout).
        store: Where every replica's state is recorded.
        fleet: The live replicas.
        planner: Builds allocation requests and backends.
        accounts: Tenants' identities, budgets and node-hour charges.
        backoff: Per-service launch back-off.
        preemptions: Where lent replicas were preempted.
        watch: The stacks' reachability (told of failed calls; asked before polling).
        specs: The current specs by name.
        pools: The functions broker, when this process runs one.
        wake: Asks the reconciler for its next tick now.
        agent_keys: Agents' secrets, handed to their replicas.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        fleet: Fleet,
        planner: AllocationPlanner,
        accounts: TenantAccounts,
        backoff: LaunchBackoff,
        preemptions: Preemptions,
        watch: StackWatch,
        specs: Callable[[], Mapping[str, Deployable]],
        pools: Callable[[], Pools | None],
        wake: Callable[[], None],
        agent_keys: AgentKeys | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._fleet = fleet
        self._planner = planner
        self._accounts = accounts
        self._backoff = backoff
        self._preemptions = preemptions
        self._watch = watch
        self._specs = specs
        self._pools = pools
        self._wake = wake
        self._agent_keys = agent_keys
        self._tasks: set[asyncio.Task[None]] = set()
        self.cancellations = Cancellations(planner.backend, watch.call_failed)
        self.health = HealthMonitor(fleet, specs, pools, self)

    # launching and registration

    def request(
        self,
        service: Deployable,
        replica_id: str,
        identity: Identity | None,
        stack: str | None = None,
    ) -> AllocationRequest:
        """A new replica of ``service``, run as ``identity`` (on ``stack``, else its first)."""
        return self._accounts.with_defaults(
            self._planner.request(service, replica_id, identity, self._pools(), stack)
        )

    def estimate_request(self, service: Deployable, stack: str) -> AllocationRequest:
        """What a new replica of ``service`` would ask ``stack`` for (never submitted)."""
        try:
            identity: Identity | None = self._accounts.identity(service.name)
        except ConfigError:
            identity = None  # its launch will be refused with the reason; estimate anyway
        return self.request(service, f"{service.name}-estimate", identity, stack)

    async def restore(self) -> None:
        """Put the live replicas of an earlier run back in the fleet (``adoption.restore``)."""
        rows = await asyncio.to_thread(self._store.replicas, None, True)
        gone = restore(rows, self._fleet)
        if gone:
            reason = "not running when the control plane restarted"
            await asyncio.to_thread(self._store.mark_replicas, gone, "gone", reason)
        pools = self._pools()
        for replica in self._fleet.replicas.values():
            logger.info(
                "replica %s: restored (%s, %s %s); its stack confirms it in the background",
                replica.id, replica.state.value, replica.backend, replica.handle,
            )  # fmt: skip
            if pools is not None and replica.token_hash and replica.base_url:
                # A registered replica keeps a token only if it is a pool's worker.
                pools.expect(replica.id, replica.token_hash)

    async def launch(self, service: Deployable, stack: str, fingerprint: str) -> LaunchOutcome:
        """Start one replica of ``service`` (its spec's ``fingerprint``) on ``stack``.

        Unless something stops it: the tenant's identity or budget, its
        secrets, or the stack (no room, or the submit failed).
        """
        replica_id = f"{service.name}-{secrets.token_hex(3)}"
        accounts, pools = self._accounts, self._pools()
        try:
            identity = await asyncio.to_thread(accounts.identity, service.name)
            request = self.request(service, replica_id, identity, stack)
            backend = self._planner.backend(stack)
        except AIFactoryError as exc:
            self._backoff.failed(service.name, str(exc))
            return "refused"
        refusal = await asyncio.to_thread(
            accounts.budget_refusal, service.name, service, list(self._fleet.replicas.values())
        )
        if refusal is not None:
            self._backoff.wait(service.name, refusal, _BUDGET_RETRY_S)
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
                pool_worker=isinstance(service, FunctionPool) and pools is not None,
            )
        except (OSError, AIFactoryError) as exc:
            reason = f"could not hand its secrets to {identity.user}: {exc}"
            self._backoff.failed(service.name, reason)
            return "refused"

        replica = LiveReplica(
            replica_id,
            service.name,
            backend.name,
            token_hash=hashes.token,
            worker_token_hash=hashes.worker_token,
            drain_token_hash=hashes.drain_token,
            spec_hash=fingerprint,
            lent=lent,
            log_path=str(request.log_path),
            run_as=identity.user,
        )
        if hashes.worker_token and pools is not None:
            pools.expect(replica_id, hashes.worker_token)
        replica.timeline["requested"] = time.time()
        self._fleet.replicas[replica_id] = replica
        asked_at = time.time()
        try:
            replica.handle = await backend.submit(request)
        except BackendError as exc:
            del self._fleet.replicas[replica_id]
            await asyncio.to_thread(discard_replica_secrets, self._settings.privilege, request)
            if pools is not None:
                pools.forget(replica_id)
            if isinstance(exc, CapacityExceeded):
                self._backoff.wait(service.name, str(exc), _CAPACITY_RETRY_S)
                return "no room"
            self._watch.call_failed(backend.name, exc, asked_at)
            self._backoff.failed(service.name, str(exc))
            return "refused"
        self._backoff.submitted(service.name)
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
        await self.transition(
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
            self._preemptions.note(replica.service, replica.backend)
            if replica.state is not ReplicaState.DRAINING:
                await self.transition(
                    replica, ReplicaState.DRAINING, "preempted: draining within its grace time"
                )
            self._wake()  # its replacement starts now, not at the next interval
        return self._busy(replica)

    # following the stacks

    async def follow_allocations(self) -> None:
        """Ask each answering stack how its replicas' allocations stand, and act on the ends."""
        by_backend: dict[str, list[LiveReplica]] = {}
        for replica in self._fleet.replicas.values():
            if replica.handle:
                by_backend.setdefault(replica.backend, []).append(replica)
        for name, replicas in by_backend.items():
            if not self._watch.answers(name):
                continue  # kept as they are until it answers (the watch asks it)
            asked_at = time.time()
            statuses = await self._planner.backend(name).status([r.handle for r in replicas])
            for replica in replicas:
                status = statuses.get(replica.handle) or AllocationStatus(AllocationState.UNKNOWN)
                if not status.answered:
                    self._watch.failed(name, status.reason, asked_at)
                elif status.state is AllocationState.UNKNOWN:
                    self._watch.doubt(name)  # it knows no such job: the watch settles that
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
                    self._preemptions.note(replica.service, replica.backend)
                    await self.transition(
                        replica, ReplicaState.GONE, f"preempted ({status.reason})"
                    )
                    self._wake()
                elif replica.state is ReplicaState.DRAINING:
                    await self.transition(replica, ReplicaState.GONE, status.reason)
                elif status.state is AllocationState.TIMEOUT:
                    # Reaching the time limit is the normal end of an allocation, not a failure.
                    await self.transition(replica, ReplicaState.GONE, status.reason)
                else:
                    await self.fail(replica, f"allocation ended: {status.reason}")

    async def adopt(self, stack: str, ours: Mapping[str, str]) -> None:
        """``stack`` answered with the allocations it runs for us: settle adoption, end strays."""
        settled = settle(stack, ours, self._fleet)
        for replica in settled.confirmed:
            logger.info("replica %s: adopted (%s %s)", replica.id, stack, replica.handle)
        for replica in settled.gone:
            await self.transition(
                replica, ReplicaState.GONE, f"its allocation ended while {stack} was not asked"
            )
        for replica_id, handle in settled.strays.items():
            logger.warning("cancelling stray %s %s (replica %s unknown)", stack, handle, replica_id)
            self.cancellations.cancel(stack, handle)
        if settled.gone or settled.confirmed:
            self._wake()

    # draining and stopping

    async def drain(self, replica: LiveReplica, reason: str) -> None:
        """Take ``replica`` out of routing; it stops once nothing runs on it."""
        await self.transition(replica, ReplicaState.DRAINING, reason)

    async def drain_step(self) -> None:
        """Stop the draining replicas that are idle now (or past the drain timeout)."""
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

    async def stop_all(self) -> None:
        """Drain, cancel, charge and record as gone every live replica (the plane stops)."""
        live = list(self._fleet.replicas.values())
        for replica in live:
            replica.state = ReplicaState.DRAINING
        deadline = time.monotonic() + self._settings.drain_timeout_s
        while any(r.in_flight for r in live) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        # Cancels not confirmed by now are the next run's: it finds their jobs by tag.
        await self.cancellations.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(
                self._planner.backend(r.backend).cancel(r.handle)
                for r in self._fleet.replicas.values()
                if r.handle
            ),
            return_exceptions=True,
        )
        # Charged now, not left to the next run: the scheduler gets a few seconds to record them.
        await asyncio.gather(
            *(
                self._accounts.charge_end(
                    r, self._gpus(r), self._planner.backend(r.backend), tries=3
                )
                for r in live
            ),
            return_exceptions=True,
        )
        ids = [r.id for r in live]
        if ids:
            await asyncio.to_thread(self._store.mark_replicas, ids, "gone", "control plane stopped")
        self._fleet.replicas.clear()

    def _gpus(self, replica: LiveReplica) -> int:
        spec = self._specs().get(replica.service)
        return spec.resources.gpus if spec else 0

    def _busy(self, replica: LiveReplica) -> int:
        """Requests (or, for a pool's worker, tasks) the replica still serves."""
        pools = self._pools()
        if isinstance(self._specs().get(replica.service), FunctionPool) and pools is not None:
            return pools.running(replica.id)
        return replica.in_flight

    async def _stop(self, replica: LiveReplica) -> None:
        """Cancel a drained replica's allocation; it is gone once its stack confirms."""
        if replica.handle and not await self.cancellations.cancel(replica.backend, replica.handle):
            return  # stopping: the next run cancels it by its tag
        await self.transition(replica, ReplicaState.GONE, "drained and stopped")
        self._wake()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # the monitor's Lifecycle

    async def transition(
        self, replica: LiveReplica, state: ReplicaState, reason: str, **fields: Any
    ) -> None:
        """Move ``replica`` to ``state`` and record it (gone or failed: out of the fleet)."""
        logger.info(
            "replica %s: %s -> %s (%s)", replica.id, replica.state.value, state.value, reason
        )
        replica.state = state
        replica.changed_monotonic = time.monotonic()
        replica.timeline[state.value] = time.time()
        pools = self._pools()
        if pools is not None and state is ReplicaState.DRAINING:
            pools.drain(replica.id)
        if state in (ReplicaState.GONE, ReplicaState.FAILED):
            self._fleet.replicas.pop(replica.id, None)
            backend = self._planner.backend(replica.backend)
            self._background(self._accounts.charge_end(replica, self._gpus(replica), backend))
            if pools is not None:
                pools.forget(replica.id)
        await asyncio.to_thread(
            self._store.update_replica, replica.id, state=state.value, reason=reason, **fields
        )

    async def fail(self, replica: LiveReplica, reason: str) -> None:
        """Fail ``replica``: cancel its allocation and back off its service."""
        if replica.handle:
            self.cancellations.cancel(replica.backend, replica.handle)
        self._backoff.failed(replica.service, reason)
        await self.transition(replica, ReplicaState.FAILED, reason)

    def ready(self, service: str) -> None:
        """A replica of ``service`` became ready: its failures are forgiven, held requests go."""
        self._backoff.forgive(service)
        self._fleet.holding.wake(service)
