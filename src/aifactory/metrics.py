"""Prometheus metrics of the whole process, served at ``/metrics``.

Each room updates its own series through the small functions below, so no
room touches another's metric objects. Names follow Prometheus conventions:
a unit suffix (``_seconds``), ``_total`` on counters (added by the client
library), and plain nouns for gauges. The function-pool gauges are read from
the broker only when ``/metrics`` is scraped, so the task path pays nothing;
the gateway's per-request series are plain Python cells read the same way.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

REGISTRY = CollectorRegistry()

REPLICAS = Gauge(
    "aifactory_replicas",
    "Replicas by service, state and backend",
    ["service", "state", "backend"],
    registry=REGISTRY,
)

QUEUE_LENGTH = Gauge(
    "aifactory_queued_requests",
    "Requests held while no replica is ready",
    ["model"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "aifactory_queue_wait_seconds",
    "How long held requests waited for a replica",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
SCALING_EVENTS = Counter(
    "aifactory_scaling_events",
    "Changes of a service's wanted replicas",
    ["service", "direction"],
    registry=REGISTRY,
)

DEPENDENCY_UP = Gauge(
    "aifactory_dependency_up",
    "Whether a system the control plane depends on answers (1) or not (0)",
    ["dependency"],
    registry=REGISTRY,
)
DEPENDENCY_UNREACHABLE_SINCE = Gauge(
    "aifactory_dependency_unreachable_since_timestamp_seconds",
    "Unix time since when a dependency does not answer (0 while it answers)",
    ["dependency"],
    registry=REGISTRY,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class CounterCell:
    """One counter series, counted in plain Python.

    The gateway's series change on every request: prometheus-client's own
    (a lock and two checks per change) cost ~5% of the gateway's CPU. Only the
    event loop writes these; a scrape reads them.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        self.value += amount


class GaugeCell(CounterCell):
    """One gauge series, in plain Python (see ``CounterCell``)."""

    __slots__ = ()

    def dec(self, amount: float = 1) -> None:
        """Take ``amount`` off."""
        self.value -= amount


class HistogramCell:
    """One histogram series, in plain Python (see ``CounterCell``)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


C = TypeVar("C", CounterCell, GaugeCell, HistogramCell)


class _CellFamily(Generic[C]):
    """A metric whose series are cells of one kind, labelled by value tuples."""

    def __init__(
        self, name: str, documentation: str, labels: list[str], new: Callable[[], C]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.cells: dict[tuple[str, ...], C] = {}
        self._new: Callable[[], C] = new

    def cell(self, *values: str) -> C:
        """The series of ``values`` (created at its first use)."""
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = self._new()
        return cell

    def family(self) -> Metric:
        """The metric as prometheus-client exposes it."""
        cells: list[tuple[tuple[str, ...], C]] = list(self.cells.items())
        family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        if self._new is CounterCell:
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        elif self._new is GaugeCell:
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        else:
            family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, series in cells:
            if isinstance(series, HistogramCell):
                assert isinstance(family, HistogramMetricFamily)
                bounds: tuple[float, ...] = series.bounds
                edges = [*(repr(float(b)) for b in bounds), "+Inf"]
                buckets = list(zip(edges, accumulate(series.counts), strict=True))
                family.add_metric(list(values), buckets, sum_value=series.sum)
            else:
                assert not isinstance(family, HistogramMetricFamily)
                family.add_metric(list(values), series.value)
        return family


class _CellCollector(Collector):
    """Exposes cell families at scrape time."""

    def __init__(self, *families: _CellFamily[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.family()


def _histogram(*bounds: float) -> Callable[[], HistogramCell]:
    return lambda: HistogramCell(bounds)


REQUESTS = _CellFamily(
    "aifactory_requests",
    "Requests answered by the gateway",
    ["model", "endpoint", "status"],
    CounterCell,
)
LATENCY = _CellFamily(
    "aifactory_request_duration_seconds",
    "Time from request received to last byte sent",
    ["model", "endpoint"],
    _histogram(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = _CellFamily(
    "aifactory_requests_in_flight", "Requests being served", ["model"], GaugeCell
)
TOKENS = _CellFamily("aifactory_tokens", "Tokens processed", ["model", "kind"], CounterCell)
TIME_TO_FIRST_TOKEN = _CellFamily(
    "aifactory_time_to_first_token_seconds",
    "Time from request received to the first streamed token sent",
    ["model"],
    _histogram(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
REGISTRY.register(_CellCollector(REQUESTS, LATENCY, IN_FLIGHT, TOKENS, TIME_TO_FIRST_TOKEN))


class RequestSeries:
    """The series of one (model, endpoint), looked up once."""

    def __init__(self, model: str, endpoint: str) -> None:
        self.in_flight = IN_FLIGHT.cell(model)
        self.latency = LATENCY.cell(model, endpoint)
        self.prompt_tokens = TOKENS.cell(model, "prompt")
        self.completion_tokens = TOKENS.cell(model, "completion")
        self.time_to_first_token = TIME_TO_FIRST_TOKEN.cell(model)
        self._model = model
        self._endpoint = endpoint
        self._by_status: dict[int, CounterCell] = {}

    def answered(self, status: int) -> CounterCell:
        """The request counter for one response status."""
        counter = self._by_status.get(status)
        if counter is None:
            counter = REQUESTS.cell(self._model, self._endpoint, str(status))
            self._by_status[status] = counter
        return counter


_SERIES: dict[tuple[str, str], RequestSeries] = {}


def request_series(model: str, endpoint: str) -> RequestSeries:
    """The cached series of a (model, endpoint); models are bounded by the specs."""
    series = _SERIES.get((model, endpoint))
    if series is None:
        series = _SERIES[(model, endpoint)] = RequestSeries(model, endpoint)
    return series


def set_replica_counts(counts: dict[tuple[str, str, str], int]) -> None:
    """Replace the replica gauge with fresh counts per (service, state, backend)."""
    REPLICAS.clear()
    for (service, state, backend), count in counts.items():
        REPLICAS.labels(service, state, backend).set(count)


def set_dependency(dependency: str, unreachable_since: float | None) -> None:
    """Whether ``dependency`` (``slurm``, ``postgresql``…) answers, or since when it does not."""
    DEPENDENCY_UP.labels(dependency).set(0 if unreachable_since is not None else 1)
    DEPENDENCY_UNREACHABLE_SINCE.labels(dependency).set(unreachable_since or 0)


PoolCounts = Callable[[], Mapping[str, Mapping[str, int]]]
"""Per pool: ``workers``, ``capacity``, ``queued`` and ``running`` (the broker's counts)."""


class _FunctionPoolCollector(Collector):
    """Function-pool gauges, read from the broker at scrape time."""

    def __init__(self) -> None:
        self.source: PoolCounts | None = None

    def collect(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily(
            "aifactory_function_workers", "Workers connected to a pool", labels=["pool"]
        )
        slots = GaugeMetricFamily(
            "aifactory_function_slots", "Task slots of a pool's workers", labels=["pool"]
        )
        tasks = GaugeMetricFamily(
            "aifactory_function_tasks",
            "Function tasks queued or running, per pool",
            labels=["pool", "state"],
        )
        for pool, counts in (self.source() if self.source else {}).items():
            workers.add_metric([pool], counts.get("workers", 0))
            slots.add_metric([pool], counts.get("capacity", 0))
            tasks.add_metric([pool, "queued"], counts.get("queued", 0))
            tasks.add_metric([pool, "running"], counts.get("running", 0))
        yield from (workers, slots, tasks)


_POOLS = _FunctionPoolCollector()
REGISTRY.register(_POOLS)


def watch_function_pools(source: PoolCounts | None) -> None:
    """Read the function-pool gauges from ``source`` (None: no broker) at each scrape."""
    _POOLS.source = source


@dataclass(frozen=True)
class ModelTotals:
    """Counters of one model since the process started."""

    requests: int = 0
    errors: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The process's counters and gauges at one instant, for the dashboard.

    ``errors`` counts answers with a 5xx status; ``replicas`` maps
    (state, backend) to a count.
    """

    requests: int
    errors: int
    tokens: int
    in_flight: int
    queued: int
    replicas: dict[tuple[str, str], int]
    by_model: dict[str, ModelTotals] = field(default_factory=dict)


# What a snapshot reads: prometheus-client's metrics and the gateway's cells.
_Read = Counter | Gauge | _CellFamily[Any]
# The labels that say whose a series is: a tenant sees the series they name.
_OWNER_LABELS = ("model", "service", "pool")
# What a snapshot reads: each metric and the suffix of its samples.
_READ: tuple[tuple[_Read, str], ...] = (
    (REQUESTS, "_total"),
    (TOKENS, "_total"),
    (REPLICAS, ""),
    (IN_FLIGHT, ""),
    (QUEUE_LENGTH, ""),
)


def snapshot(names: set[str] | None = None) -> Snapshot:
    """Read the gateway and replica series once (a few hundred samples at most).

    With ``names``, only the series of those services, pools and models count.
    """
    return _snapshot(
        {
            metric: [
                s for s in _all_samples(metric, suffix) if names is None or _names_owner(s, names)
            ]
            for metric, suffix in _READ
        }
    )


def snapshots_by_name() -> dict[str, Snapshot]:
    """One snapshot per service, pool and model: its own series only (one read of each)."""
    grouped: dict[str, dict[_Read, list[Sample]]] = {}
    for metric, suffix in _READ:
        for sample in _all_samples(metric, suffix):
            owner = next((sample.labels[k] for k in _OWNER_LABELS if k in sample.labels), "")
            if owner not in grouped:
                grouped[owner] = {series: [] for series, _suffix in _READ}
            grouped[owner][metric].append(sample)
    return {name: _snapshot(series) for name, series in grouped.items()}


def _snapshot(series: dict[_Read, list[Sample]]) -> Snapshot:
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for sample in series[REQUESTS]:
        model = sample.labels["model"]
        requests[model] = requests.get(model, 0) + int(sample.value)
        if sample.labels["status"].startswith("5"):
            errors[model] = errors.get(model, 0) + int(sample.value)
    for sample in series[TOKENS]:
        model = sample.labels["model"]
        tokens[model] = tokens.get(model, 0) + int(sample.value)
    replicas: dict[tuple[str, str], int] = {}
    for sample in series[REPLICAS]:
        key = (sample.labels["state"], sample.labels["backend"])
        replicas[key] = replicas.get(key, 0) + int(sample.value)
    by_model = {
        model: ModelTotals(count, errors.get(model, 0), tokens.get(model, 0))
        for model, count in requests.items()
    }
    return Snapshot(
        requests=sum(requests.values()),
        errors=sum(errors.values()),
        tokens=sum(tokens.values()),
        in_flight=int(sum(s.value for s in series[IN_FLIGHT])),
        queued=int(sum(s.value for s in series[QUEUE_LENGTH])),
        replicas=replicas,
        by_model=by_model,
    )


def _all_samples(metric: _Read, suffix: str) -> Iterator[Sample]:
    families: Iterable[Metric]
    if isinstance(metric, _CellFamily):
        name, families = metric.name + suffix, [metric.family()]
    else:
        name = metric._name + suffix  # prometheus_client keeps the base name here
        families = metric.collect()
    for family in families:
        for sample in family.samples:
            if sample.name == name:
                yield sample


def render() -> bytes:
    """The metrics in Prometheus text format."""
    return generate_latest(REGISTRY)


class _Owned(Collector):
    """The series of ``REGISTRY`` whose model, service or pool is one of ``names``."""

    def __init__(self, names: set[str]) -> None:
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            kept = [s for s in family.samples if self._owns(s)]
            if kept:
                family.samples = kept
                yield family

    def _owns(self, sample: Sample) -> bool:
        return _names_owner(sample, self._names)


def _names_owner(sample: Sample, names: set[str]) -> bool:
    """Whether ``sample`` is the series of a service, pool or model in ``names``."""
    return any(sample.labels.get(label) in names for label in _OWNER_LABELS)


def render_for(names: set[str]) -> bytes:
    """The series of the services, pools and models in ``names``, in Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Owned(names))
    return generate_latest(registry)
