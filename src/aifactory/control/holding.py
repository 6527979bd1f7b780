"""Held requests: a bounded per-service queue of requests waiting for a replica.

When a model has no ready replica (scaled to zero, or all starting), the
gateway holds the request here instead of failing it. Holding asks the
reconciler for capacity at once (``on_demand``, given at construction: the
control plane's ``Wakeup.demand``); a replica turning ready wakes every
waiter, and they take replicas in the order they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class Held:
    """One waiting request."""

    service: str
    enqueued_at: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class HoldQueues:
    """The waiting requests of every service, FIFO, each queue bounded."""

    def __init__(self, on_demand: Callable[[str], None] = lambda _service: None) -> None:
        self._on_demand = on_demand
        self._queues: dict[str, list[Held]] = {}

    def hold(self, service: str, limit: int) -> Held | None:
        """Queue a request; None when the queue is full."""
        queue = self._queues.setdefault(service, [])
        if len(queue) >= limit:
            return None
        held = Held(service)
        queue.append(held)
        self._on_demand(service)
        return held

    def unhold(self, held: Held) -> None:
        """Leave the queue (served, timed out or gone)."""
        queue = self._queues.get(held.service, [])
        with contextlib.suppress(ValueError):
            queue.remove(held)

    def position(self, held: Held) -> int:
        """1 for the first in line."""
        queue = self._queues.get(held.service, [])
        return queue.index(held) + 1 if held in queue else 0

    def length(self, service: str) -> int:
        """How many requests wait for ``service``."""
        return len(self._queues.get(service, []))

    def oldest_wait_s(self, service: str) -> float:
        """How long the first in line has waited."""
        queue = self._queues.get(service)
        return time.monotonic() - queue[0].enqueued_at if queue else 0.0

    def wake(self, service: str) -> None:
        """A replica became ready: let the waiters try."""
        for held in self._queues.get(service, []):
            held.ready.set()

    async def wait(self, held: Held, timeout_s: float) -> None:
        """Sleep until woken or ``timeout_s`` passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(held.ready.wait(), timeout_s)
        held.ready.clear()
