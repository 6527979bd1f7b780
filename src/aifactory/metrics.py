"""Prometheus metrics of the whole process, served at ``/metrics``.

Each room updates its own series through the small functions below, so no
room touches another's metric objects.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "aifactory_requests",
    "Requests answered by the gateway",
    ["model", "endpoint", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "aifactory_request_latency_seconds",
    "Time from request received to last byte sent",
    ["model", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "aifactory_requests_in_flight", "Requests being served", ["model"], registry=REGISTRY
)
TOKENS = Counter("aifactory_tokens", "Tokens processed", ["model", "kind"], registry=REGISTRY)
REPLICAS = Gauge(
    "aifactory_replicas", "Replicas by service and state", ["service", "state"], registry=REGISTRY
)

QUEUE_LENGTH = Gauge(
    "aifactory_queue_length",
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
TIME_TO_FIRST_TOKEN = Histogram(
    "aifactory_time_to_first_token_seconds",
    "Time from request received to the first streamed token sent",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SCALING_EVENTS = Counter(
    "aifactory_scaling_events",
    "Changes of a service's wanted replicas",
    ["service", "direction"],
    registry=REGISTRY,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class RequestSeries:
    """The series of one (model, endpoint), looked up once: ``labels()`` is not free."""

    def __init__(self, model: str, endpoint: str) -> None:
        self.in_flight = IN_FLIGHT.labels(model)
        self.latency = LATENCY.labels(model, endpoint)
        self.prompt_tokens = TOKENS.labels(model, "prompt")
        self.completion_tokens = TOKENS.labels(model, "completion")
        self._model = model
        self._endpoint = endpoint
        self._by_status: dict[int, Counter] = {}

    def answered(self, status: int) -> Counter:
        """The request counter for one response status."""
        counter = self._by_status.get(status)
        if counter is None:
            counter = REQUESTS.labels(self._model, self._endpoint, str(status))
            self._by_status[status] = counter
        return counter


_SERIES: dict[tuple[str, str], RequestSeries] = {}


def request_series(model: str, endpoint: str) -> RequestSeries:
    """The cached series of a (model, endpoint); models are bounded by the specs."""
    series = _SERIES.get((model, endpoint))
    if series is None:
        series = _SERIES[(model, endpoint)] = RequestSeries(model, endpoint)
    return series


def set_replica_counts(counts: dict[tuple[str, str], int]) -> None:
    """Replace the replica gauge with fresh counts per (service, state)."""
    REPLICAS.clear()
    for (service, state), count in counts.items():
        REPLICAS.labels(service, state).set(count)


def render() -> bytes:
    """The metrics in Prometheus text format."""
    return generate_latest(REGISTRY)
