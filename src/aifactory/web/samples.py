"""The last hour of the process's counters, one sample every few seconds, in memory.

The dashboard's live charts read this ring; Prometheus is the place for
anything longer. Sampling reads the metric series off the request path, so
the gateway pays nothing for the charts.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from aifactory import metrics

SAMPLE_INTERVAL_S = 10.0
_WINDOW_S = 3600.0
_MIN_PARTIAL_S = 2.0


@dataclass(frozen=True)
class Sample:
    """What happened in one interval (counts) and how things stood at its end (gauges).

    ``span_s`` is the interval's length, so a rate is a count over ``span_s``.
    """

    at: float
    span_s: float
    requests: int
    errors: int
    tokens: int
    in_flight: int
    queued: int
    ready: int
    starting: int


class MetricsSampler:
    """A ring of samples covering the last hour; ``start``/``stop`` run its loop.

    Args:
        interval_s: Seconds between samples.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._ring: deque[Sample] = deque(maxlen=max(1, round(_WINDOW_S / interval_s)))
        self._last = metrics.snapshot()
        self._last_at = time.time()
        self._task: asyncio.Task[None] | None = None

    def samples(self) -> list[dict[str, Any]]:
        """The ring, oldest first, then the interval in progress, as JSON-ready dicts.

        The interval in progress is left out in its first seconds, where one
        request would read as a burst.
        """
        samples = list(self._ring)
        now = time.time()
        if now - self._last_at >= _MIN_PARTIAL_S:
            samples.append(self._measure(metrics.snapshot(), now))
        return [asdict(sample) for sample in samples]

    def take(self, now: float | None = None) -> Sample:
        """Record one sample: counts since the previous one, gauges as they are now."""
        now = time.time() if now is None else now
        current = metrics.snapshot()
        sample = self._measure(current, now)
        self._last, self._last_at = current, now
        self._ring.append(sample)
        return sample

    def _measure(self, current: metrics.Snapshot, now: float) -> Sample:
        before = self._last
        starting = sum(
            count
            for (state, _backend), count in current.replicas.items()
            if state in ("submitted", "registered", "healthy")
        )
        ready = sum(c for (state, _b), c in current.replicas.items() if state == "ready")
        return Sample(
            at=now,
            span_s=max(1e-3, now - self._last_at),
            requests=current.requests - before.requests,
            errors=current.errors - before.errors,
            tokens=current.tokens - before.tokens,
            in_flight=current.in_flight,
            queued=current.queued,
            ready=ready,
            starting=starting,
        )

    def start(self) -> None:
        """Start sampling every ``interval_s`` seconds."""
        self._task = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.take()
