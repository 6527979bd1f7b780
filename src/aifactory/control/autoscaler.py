"""The autoscaler: how many replicas each service should have, from live load.

Load is what the gateway reports through the fleet: requests in flight on the
service's replicas plus requests held in its queue. The policy comes from the
spec (``replicas.min``/``max`` and ``autoscaling``)::

    wanted = ceil(load / target_concurrency), clamped to [min, max]
    up:   wanted above current for scale_up_window   -> raise at once to wanted
    down: wanted below current for scale_down_window -> lower to wanted (>= 1)
    zero: no request at all for idle_to_zero (and min == 0) -> 0
    a held request at zero replicas                  -> 1, immediately

Every change is recorded with its reason, newest last.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from aifactory.specs import Service

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
    above_since: float | None = None
    below_since: float | None = None
    last_busy: float = field(default_factory=time.monotonic)
    decisions: deque[ScalingDecision] = field(default_factory=lambda: deque(maxlen=_HISTORY))


class Autoscaler:
    """Turns live load into a wanted replica count per service."""

    def __init__(self) -> None:
        self._services: dict[str, _ServiceLoad] = {}

    def wanted(
        self, service: Service, in_flight: int, queued: int, now: float | None = None
    ) -> int:
        """The replica count ``service`` should have now."""
        now = time.monotonic() if now is None else now
        policy = service.autoscaling
        low, high = service.replicas.min, service.replicas.max
        state = self._services.setdefault(service.name, _ServiceLoad())
        if state.wanted is None:
            state.wanted = low
        load = in_flight + queued
        if load:
            state.last_busy = now
        target = min(high, max(low, math.ceil(load / policy.target_concurrency)))
        current = state.wanted
        if queued and current == 0:
            self._decide(state, service.name, max(1, target), "request waiting at zero replicas")
        elif target > current:
            state.below_since = None
            state.above_since = state.above_since if state.above_since is not None else now
            if now - state.above_since >= policy.scale_up_window_s:
                reason = f"load {load} > {policy.target_concurrency} per replica x {current}"
                self._decide(state, service.name, target, reason)
                state.above_since = None
        elif target < current:
            state.above_since = None
            state.below_since = state.below_since if state.below_since is not None else now
            floor = max(target, 1 if current > 0 else 0)
            idle_for = now - state.last_busy
            if low == 0 and load == 0 and idle_for >= policy.idle_to_zero_s:
                self._decide(state, service.name, 0, f"idle for {idle_for:.0f}s")
            elif floor < current and now - state.below_since >= policy.scale_down_window_s:
                self._decide(state, service.name, floor, f"load {load} needs {floor}")
                state.below_since = None
        else:
            state.above_since = state.below_since = None
        return state.wanted if state.wanted is not None else low

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
    def _decide(state: _ServiceLoad, service: str, after: int, reason: str) -> None:
        before = state.wanted if state.wanted is not None else 0
        if after == before:
            return
        state.wanted = after
        state.decisions.append(ScalingDecision(time.time(), service, before, after, reason))
