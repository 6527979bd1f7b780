"""The health monitor against a real HTTP engine stand-in: when replicas turn ready or fail.

The lifecycle the monitor reports to is a recorder that moves the replica as
the reconciler would; the engine is a tiny aiohttp server whose health answer
the test sets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from aifactory.control import Fleet, ReplicaState
from aifactory.control.fleet import LiveReplica
from aifactory.control.monitor import HealthMonitor
from aifactory.control.pools import PoolLoad
from aifactory.specs import Deployable, load_deployable

CHAT = """
name: chat
models: [{name: smol}]
engine: {type: openai-compatible, command: [serve, --port, "{port}"]}
health: {path: /health, interval_s: 60, failure_threshold: 3, start_timeout_s: 600}
"""
AGENT = "kind: Agent\nname: helper\ncommand: [python, agent.py]\n"
POOL = "kind: FunctionPool\nname: cpu\nworkers: 2\n"


@dataclass
class Recorder:
    """The reconciler's side of the monitor, written down."""

    moves: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    readied: list[str] = field(default_factory=list)

    async def transition(
        self, replica: LiveReplica, state: ReplicaState, reason: str, **fields: Any
    ) -> None:
        replica.state = state
        self.moves.append((replica.id, state.value, reason))

    async def fail(self, replica: LiveReplica, reason: str) -> None:
        replica.state = ReplicaState.FAILED
        self.failed.append((replica.id, reason))

    def ready(self, service: str) -> None:
        self.readied.append(service)


@dataclass
class Engine:
    """Answers its health path with ``status``; ``answers`` can change it per probe."""

    status: int = 503
    probes: int = 0
    answers: Callable[[int], int] | None = None
    base_url: str = ""

    async def health(self, _request: web.Request) -> web.Response:
        self.probes += 1
        if self.answers is not None:
            self.status = self.answers(self.probes)
        return web.Response(status=self.status)


@dataclass
class StubPools:
    """The broker as the monitor sees it: only who joined matters here."""

    worker_address: str = "tcp://127.0.0.1:1"
    public_key: str = ""
    members: set[str] = field(default_factory=set)

    def joined(self, replica_id: str) -> bool:
        return replica_id in self.members

    def expect(self, replica_id: str, token_hash: str) -> None: ...
    def forget(self, replica_id: str) -> None: ...
    def running(self, replica_id: str) -> int:
        return 0

    def load(self, pool: str) -> PoolLoad:
        return PoolLoad(0, 0, None)

    def drain(self, replica_id: str) -> None: ...


@dataclass
class World:
    monitor: HealthMonitor
    fleet: Fleet
    lifecycle: Recorder
    engine: Engine
    specs: dict[str, Deployable]
    pools: StubPools

    def replica(self, replica_id: str, state: ReplicaState, **fields: Any) -> LiveReplica:
        service = fields.pop("service", "chat")
        fields.setdefault("base_url", self.engine.base_url)
        replica = LiveReplica(replica_id, service, "local", state=state, **fields)
        self.fleet.replicas[replica_id] = replica
        return replica


@asynccontextmanager
async def world(*specs: str) -> AsyncIterator[World]:
    engine = Engine()
    app = web.Application()
    app.router.add_get("/health", engine.health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    engine.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    parsed = [load_deployable(spec) for spec in (specs or (CHAT,))]
    by_name = {spec.name: spec for spec in parsed}
    fleet, lifecycle, pools = Fleet(), Recorder(), StubPools()
    monitor = HealthMonitor(fleet, lambda: by_name, lambda: pools, lifecycle)
    await monitor.start()
    try:
        yield World(monitor, fleet, lifecycle, engine, by_name, pools)
    finally:
        await monitor.stop()
        await runner.cleanup()


def state_of(replica: LiveReplica) -> ReplicaState:
    """The replica's state now (read afresh: the monitor changes it between asserts)."""
    return replica.state


def run(scenario: Callable[[World], Coroutine[Any, Any, None]], *specs: str) -> None:
    async def main() -> None:
        async with asyncio.timeout(10), world(*specs) as w:
            await scenario(w)

    asyncio.run(main())


def test_a_loading_engine_is_healthy_and_a_200_makes_it_ready() -> None:
    async def scenario(w: World) -> None:
        replica = w.replica("chat-1", ReplicaState.REGISTERED)
        await w.monitor.check()
        assert state_of(replica) is ReplicaState.HEALTHY
        assert w.lifecycle.moves == [("chat-1", "healthy", "health check answered 503")]
        assert w.lifecycle.readied == [], "no traffic, no held request released yet"
        w.engine.status = 200
        await w.monitor.check()
        assert state_of(replica) is ReplicaState.READY
        assert w.lifecycle.readied == ["chat"], "held requests are woken"

    run(scenario)


def test_an_engine_ready_at_once_passes_through_healthy() -> None:
    async def scenario(w: World) -> None:
        w.engine.status = 200
        w.replica("chat-1", ReplicaState.REGISTERED)
        await w.monitor.check()
        assert [state for _, state, _ in w.lifecycle.moves] == ["healthy", "ready"]

    run(scenario)


def test_a_ready_replica_fails_after_the_threshold_of_failures_in_a_row() -> None:
    async def scenario(w: World) -> None:
        replica = w.replica("chat-1", ReplicaState.READY)

        async def probe_now(status: int) -> None:
            w.engine.status = status
            replica.last_health_monotonic = 0.0  # due again, whatever the interval
            await w.monitor.check()

        for status in (500, 500, 200, 500, 500):
            await probe_now(status)
        assert w.lifecycle.failed == [], "a pass in between starts the count again"
        await probe_now(500)
        assert w.lifecycle.failed == [("chat-1", "health check answered 500")]
        assert w.engine.probes == 6

    run(scenario)


def test_a_ready_replica_is_probed_only_once_its_interval_passed() -> None:
    async def scenario(w: World) -> None:
        w.engine.status = 200
        w.replica("chat-1", ReplicaState.READY, last_health_monotonic=time.monotonic())
        await w.monitor.check()
        assert w.engine.probes == 0
        w.fleet.replicas["chat-1"].last_health_monotonic -= 61
        await w.monitor.check()
        assert w.engine.probes == 1

    run(scenario)


def test_a_suspect_replica_is_probed_at_once_and_a_pass_clears_it() -> None:
    async def scenario(w: World) -> None:
        w.engine.status = 200
        replica = w.replica("chat-1", ReplicaState.READY, last_health_monotonic=time.monotonic())
        replica.suspect = True  # a request just failed on it
        assert w.fleet.ready_count("chat") == 0
        await w.monitor.check()
        assert not replica.suspect and w.fleet.ready_count("chat") == 1
        assert w.lifecycle.failed == []

    run(scenario)


def test_an_engine_that_stopped_listening_counts_as_a_failure() -> None:
    async def scenario(w: World) -> None:
        spec = CHAT.replace("failure_threshold: 3", "failure_threshold: 1")
        w.specs["chat"] = load_deployable(spec)
        w.replica("chat-1", ReplicaState.READY, base_url="http://127.0.0.1:9")
        await w.monitor.check()
        ((replica_id, reason),) = w.lifecycle.failed
        assert replica_id == "chat-1" and reason.startswith("health check failed")

    run(scenario)


def test_a_replica_starting_past_its_timeout_fails_with_its_last_log_lines(
    tmp_path: Path,
) -> None:
    log = tmp_path / "chat-1.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 16)))

    async def scenario(w: World) -> None:
        w.specs["chat"] = load_deployable(
            CHAT.replace("start_timeout_s: 600", "start_timeout_s: 5")
        )
        w.replica(
            "chat-1",
            ReplicaState.SUBMITTED,
            base_url="",
            log_path=str(log),
            created_monotonic=time.monotonic() - 6,
        )
        w.replica("chat-2", ReplicaState.SUBMITTED, base_url="")  # just submitted: waits
        await w.monitor.check()
        ((replica_id, reason),) = w.lifecycle.failed
        assert replica_id == "chat-1"
        assert reason.startswith("not ready after 5s start timeout; last log lines:\n")
        assert reason.endswith("\n".join(f"line {n}" for n in range(6, 16)))
        assert "line 5\n" not in reason

    run(scenario)


def test_replicas_not_active_or_of_no_known_service_are_left_alone() -> None:
    async def scenario(w: World) -> None:
        w.replica("chat-1", ReplicaState.DRAINING)
        w.replica("old-1", ReplicaState.REGISTERED, service="old")
        w.replica("chat-2", ReplicaState.REGISTERED, watched=True)  # its watcher probes it
        await w.monitor.check()
        assert w.engine.probes == 0 and w.lifecycle.moves == []

    run(scenario)


def test_a_just_registered_replica_is_watched_until_ready() -> None:
    async def scenario(w: World) -> None:
        w.engine.answers = lambda probe: 200 if probe >= 3 else 503
        replica = w.replica("chat-1", ReplicaState.REGISTERED)
        await w.monitor.watch_startup(replica)
        assert replica.state is ReplicaState.READY and not replica.watched
        assert w.engine.probes == 3
        assert w.lifecycle.readied == ["chat"]

    run(scenario)


def test_agents_are_ready_once_registered_and_pools_once_their_worker_joined() -> None:
    async def scenario(w: World) -> None:
        agent = w.replica("helper-1", ReplicaState.REGISTERED, service="helper")
        pool = w.replica("cpu-1", ReplicaState.REGISTERED, service="cpu")
        await w.monitor.check()
        assert agent.state is ReplicaState.READY
        assert state_of(pool) is ReplicaState.REGISTERED, "its worker has not joined"
        w.pools.members.add("cpu-1")
        await w.monitor.check()
        assert state_of(pool) is ReplicaState.READY
        assert w.lifecycle.readied == ["helper", "cpu"]
        assert w.engine.probes == 0, "neither is probed over HTTP"

    run(scenario, CHAT, AGENT, POOL)
