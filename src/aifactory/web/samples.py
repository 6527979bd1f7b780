"""The last hour of the process's counters, one sample every few seconds, in memory.

The dashboard's live charts read this ring; Prometheus is the place for
anything longer. Sampling reads the metric series off the request path, so
the gateway pays nothing for the charts. Each sample is kept per service,
pool and model too, so a tenant's charts add up its own names only.
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


@dataclass(frozen=True)
class _Reading:
    """The counters at one instant: the factory's and each name's."""

    total: metrics.Snapshot
    by_name: dict[str, metrics.Snapshot]

    @classmethod
    def now(cls) -> _Reading:
        return cls(metrics.snapshot(), metrics.snapshots_by_name())


_NOTHING = metrics.Snapshot(0, 0, 0, 0, 0, {})


class MetricsSampler:
    """A ring of samples covering the last hour; ``start``/``stop`` run its loop.

    Args:
        interval_s: Seconds between samples.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._ring: deque[tuple[Sample, dict[str, Sample]]] = deque(
            maxlen=max(1, round(_WINDOW_S / interval_s))
        )
        self._last = _Reading.now()
        self._last_at = time.time()
        self._task: asyncio.Task[None] | None = None

    def samples(self, names: set[str] | None = None) -> list[dict[str, Any]]:
        """The ring, oldest first, then the interval in progress, as JSON-ready dicts.

        With ``names``, each sample adds up those services, pools and models
        only. The interval in progress is left out in its first seconds, where
        one request would read as a burst.
        """
        entries = list(self._ring)
        now = time.time()
        if now - self._last_at >= _MIN_PARTIAL_S:
            entries.append(self._measure(_Reading.now(), now))
        if names is None:
            return [asdict(total) for total, _by_name in entries]
        return [asdict(_sum(at_, by_name, names)) for at_, by_name in entries]

    def take(self, now: float | None = None) -> Sample:
        """Record one sample: counts since the previous one, gauges as they are now."""
        now = time.time() if now is None else now
        current = _Reading.now()
        entry = self._measure(current, now)
        self._last, self._last_at = current, now
        self._ring.append(entry)
        return entry[0]

    def _measure(self, current: _Reading, now: float) -> tuple[Sample, dict[str, Sample]]:
        span_s = max(1e-3, now - self._last_at)
        by_name = {
            name: _between(self._last.by_name.get(name, _NOTHING), snapshot, now, span_s)
            for name, snapshot in current.by_name.items()
        }
        return _between(self._last.total, current.total, now, span_s), by_name

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


def _between(
    before: metrics.Snapshot, current: metrics.Snapshot, now: float, span_s: float
) -> Sample:
    """Counts from ``before`` to ``current``, gauges as ``current`` has them."""
    starting = sum(
        count
        for (state, _backend), count in current.replicas.items()
        if state in ("submitted", "registered", "healthy")
    )
    ready = sum(c for (state, _b), c in current.replicas.items() if state == "ready")
    return Sample(
        at=now,
        span_s=span_s,
        requests=current.requests - before.requests,
        errors=current.errors - before.errors,
        tokens=current.tokens - before.tokens,
        in_flight=current.in_flight,
        queued=current.queued,
        ready=ready,
        starting=starting,
    )


def _sum(total: Sample, by_name: dict[str, Sample], names: set[str]) -> Sample:
    """``total``'s interval, adding up the samples of ``names`` only."""
    mine = [sample for name, sample in by_name.items() if name in names]
    counted = ("requests", "errors", "tokens", "in_flight", "queued", "ready", "starting")
    return Sample(
        at=total.at,
        span_s=total.span_s,
        **{field: sum(getattr(sample, field) for sample in mine) for field in counted},
    )
