"""Health and readiness of live replicas, for the replica lifecycle.

How a replica proves it is ready depends on what it runs::

    Service       GET its health path: 503 while loading (healthy), 200 = ready
    FunctionPool  its worker joined the broker
    Agent         its program started (the launcher registered)

A replica that stays starting past its start timeout fails with the tail of
its log; a ready one that fails ``failure_threshold`` checks in a row fails.
Right after registration a replica is probed every 20 ms, so it takes
traffic within ~20 ms of its engine being ready.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp

from aifactory.control.fleet import ACTIVE, STARTING, Fleet, LiveReplica, ReplicaState
from aifactory.control.health import Probe, probe
from aifactory.control.pools import Pools
from aifactory.specs import Agent, Deployable, FunctionPool

__all__ = ["HealthMonitor", "Lifecycle"]

_STARTUP_PROBE_S = 0.02


class Lifecycle(Protocol):
    """What the monitor asks of the replica lifecycle when a replica's health changes."""

    async def transition(
        self, replica: LiveReplica, state: ReplicaState, reason: str, **fields: Any
    ) -> None:
        """Move ``replica`` to ``state``."""
        ...

    async def fail(self, replica: LiveReplica, reason: str) -> None:
        """Fail ``replica`` (its allocation is cancelled and replaced)."""
        ...

    def ready(self, service: str) -> None:
        """A replica of ``service`` became ready."""
        ...


class HealthMonitor:
    """Probes replicas and moves them through registered → healthy → ready (or failed).

    Args:
        fleet: The live replicas.
        specs: The current specs by name (read on every check).
        pools: The functions broker, for pools' readiness.
        lifecycle: Where state changes go.
    """

    def __init__(
        self,
        fleet: Fleet,
        specs: Callable[[], Mapping[str, Deployable]],
        pools: Callable[[], Pools | None],
        lifecycle: Lifecycle,
    ) -> None:
        self._fleet = fleet
        self._specs = specs
        self._pools = pools
        self._lifecycle = lifecycle
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session probes use."""
        # No cookie one engine sets is sent to another (engines may be tenants' code).
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def stop(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def check(self) -> None:
        """Fail replicas past their start timeout; probe those due."""
        now = time.monotonic()
        specs = self._specs()
        due: list[tuple[LiveReplica, Deployable]] = []
        for replica in list(self._fleet.replicas.values()):
            spec = specs.get(replica.service)
            if spec is None or replica.state not in ACTIVE:
                continue
            if (
                replica.state in STARTING
                and now - replica.created_monotonic > spec.health.start_timeout_s
            ):
                tail = await asyncio.to_thread(_log_tail, replica.log_path)
                await self._lifecycle.fail(
                    replica,
                    f"not ready after {spec.health.start_timeout_s:.0f}s start timeout"
                    + (f"; last log lines:\n{tail}" if tail else ""),
                )
            elif (
                replica.base_url
                and not replica.watched
                and (
                    replica.state is not ReplicaState.READY
                    or replica.suspect
                    or now - replica.last_health_monotonic >= spec.health.interval_s
                )
            ):
                due.append((replica, spec))
        results = await asyncio.gather(*(self._probe(r, s) for r, s in due))
        for (replica, spec), result in zip(due, results, strict=True):
            await self._apply(replica, spec, result)

    async def watch_startup(self, replica: LiveReplica) -> None:
        """Probe a just-registered replica often until it is ready (or gone)."""
        replica.watched = True
        try:
            while replica.state in (ReplicaState.REGISTERED, ReplicaState.HEALTHY):
                spec = self._specs().get(replica.service)
                if spec is None or replica.id not in self._fleet.replicas:
                    return
                await self._apply(replica, spec, await self._probe(replica, spec))
                if not _is_ready(replica):  # (a call: mypy narrowed the state above)
                    await asyncio.sleep(_STARTUP_PROBE_S)
        finally:
            replica.watched = False

    async def _apply(self, replica: LiveReplica, spec: Deployable, result: Probe) -> None:
        replica.last_health_monotonic = time.monotonic()
        lifecycle = self._lifecycle
        if result.ok:
            replica.health_failures = 0
            replica.suspect = False
            if replica.state is not ReplicaState.READY:
                if replica.state is ReplicaState.REGISTERED:
                    await lifecycle.transition(replica, ReplicaState.HEALTHY, "engine answers")
                await lifecycle.transition(
                    replica, ReplicaState.READY, result.detail or "health check passed"
                )
                lifecycle.ready(spec.name)
        elif result.answered and replica.state is ReplicaState.REGISTERED:
            await lifecycle.transition(replica, ReplicaState.HEALTHY, result.detail)
        elif replica.state is ReplicaState.READY:
            replica.health_failures += 1
            if replica.health_failures >= spec.health.failure_threshold:
                await lifecycle.fail(replica, result.detail)

    async def _probe(self, replica: LiveReplica, spec: Deployable) -> Probe:
        if isinstance(spec, Agent):
            return Probe(True, True, "agent program started")
        if isinstance(spec, FunctionPool):
            pools = self._pools()
            joined = pools is not None and pools.joined(replica.id)
            detail = "worker joined the broker" if joined else "worker not connected to the broker"
            return Probe(joined, joined, detail)
        assert self._session is not None, "HealthMonitor.start() was not called"
        return await probe(
            self._session, replica.base_url + spec.health.path, spec.health.timeout_s
        )


def _is_ready(replica: LiveReplica) -> bool:
    return replica.state is ReplicaState.READY


def _log_tail(path: str, lines: int = 10) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip()
    except OSError:
        return ""
