"""The autoscaler: how many replicas each service should have, from live load.

Load is what the gateway reports through the fleet: requests in flight on the
service's replicas plus requests held in its queue. The policy comes from the
spec (``replicas.min``/``max`` and ``autoscaling``)::

    load   = peak requests in flight since the last tick + requests held
    wanted = ceil(load / target_concurrency), clamped to [min, max]
    up:   wanted above current for scale_up_window        -> raise at once to wanted
    down: the PEAK load of the last scale_down_window needs fewer, and the last
          change is at least that old                       -> lower (>= 1)
    zero: no request started or ended for idle_to_zero (min == 0) -> 0
    a held request at zero replicas                       -> 1, immediately

Every change is recorded with its reason, newest last.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from aifactory.specs import Deployable

_HISTORY = 20


@dataclass(frozen=True)
class ScalingDecision:
    """One change of a service's wanted replica count."""

    at: float
    service: str
    before: int
    after: int
    reason: str


@dataclass
class _ServiceLoad:
    wanted: int | None = None
    changed_at: float = 0.0
    above_since: float | None = None
    last_busy: float = field(default_factory=time.monotonic)
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    decisions: deque[ScalingDecision] = field(default_factory=lambda: deque(maxlen=_HISTORY))


class Autoscaler:
    """Turns live load into a wanted replica count per service."""

    def __init__(self) -> None:
        self._services: dict[str, _ServiceLoad] = {}

    def wanted(
        self,
        service: Deployable,
        load: int,
        queued: int,
        now: float | None = None,
        last_request: float | None = None,
    ) -> int:
        """The replica count ``service`` should have now.

        Args:
            service: The spec, with its policy.
            load: Peak requests in flight since the last call (the gateway's count).
            queued: Requests held now, waiting for a replica.
            now: Monotonic time (for tests).
            last_request: Monotonic time the service last saw a request start or end.
        """
        now = time.monotonic() if now is None else now
        policy = service.autoscaling
        low = service.replicas.min
        state = self._services.setdefault(service.name, _ServiceLoad(changed_at=now))
        if state.wanted is None:
            state.wanted = low
        load += queued
        if load:
            state.last_busy = now
        if last_request is not None:
            state.last_busy = max(state.last_busy, last_request)
        state.samples.append((now, load))
        while state.samples and state.samples[0][0] < now - policy.scale_down_window_s:
            state.samples.popleft()
        target = self._clamp(load, service)
        current = state.wanted
        if queued and current == 0:
            self._decide(
                state, service.name, max(1, target), "request waiting at zero replicas", now
            )
        elif target > current:
            state.above_since = state.above_since if state.above_since is not None else now
            if now - state.above_since >= policy.scale_up_window_s:
                reason = f"load {load} > {policy.target_concurrency} per replica x {current}"
                self._decide(state, service.name, target, reason, now)
                state.above_since = None
        else:
            state.above_since = None
            # Down only on the peak of the whole window: one quiet sample is no trend.
            peak = max(sample for _, sample in state.samples)
            settled = now - state.changed_at >= policy.scale_down_window_s
            floor = max(self._clamp(peak, service), 1 if current > 0 else 0)
            idle_for = now - state.last_busy
            if low == 0 and current > 0 and load == 0 and idle_for >= policy.idle_to_zero_s:
                self._decide(state, service.name, 0, f"idle for {idle_for:.0f}s", now)
            elif floor < current and settled:
                reason = f"peak load {peak} over {policy.scale_down_window_s:.0f}s needs {floor}"
                self._decide(state, service.name, floor, reason, now)
        return state.wanted if state.wanted is not None else low

    @staticmethod
    def _clamp(load: int, service: Deployable) -> int:
        wanted = math.ceil(load / service.autoscaling.target_concurrency)
        return min(service.replicas.max, max(service.replicas.min, wanted))

    def wanted_now(self, service: str) -> int | None:
        """The last count decided for ``service`` (None before its first tick)."""
        state = self._services.get(service)
        return state.wanted if state else None

    def decisions(self, service: str) -> list[ScalingDecision]:
        """Recent decisions for ``service``, newest last."""
        state = self._services.get(service)
        return list(state.decisions) if state else []

    def forget(self, service: str) -> None:
        """Drop a deleted service's state."""
        self._services.pop(service, None)

    @staticmethod
    def _decide(state: _ServiceLoad, service: str, after: int, reason: str, now: float) -> None:
        before = state.wanted if state.wanted is not None else 0
        if after == before:
            return
        state.wanted = after
        state.changed_at = now
        state.decisions.append(ScalingDecision(time.time(), service, before, after, reason))
