"""The fleet: live services and replicas in memory, and the routing choice.

The reconciler writes here; the gateway reads through the ``Router``
protocol (``resolve``, ``acquire``, ``release``). Picking is least
outstanding requests among ready replicas, ties broken in turn.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass, field
from typing import NamedTuple

from aifactory.control.holding import Held, HoldQueues
from aifactory.engines import context_tokens, endpoints, stops_only_streams, takes_text_only
from aifactory.specs import Service


class ReplicaState(enum.Enum):
    """The lifecycle of a replica, in order.

    submitted -> registered -> healthy -> ready -> draining -> gone,
    with ``failed`` reachable from any state before ``gone``.
    """

    SUBMITTED = "submitted"
    REGISTERED = "registered"
    HEALTHY = "healthy"
    READY = "ready"
    DRAINING = "draining"
    GONE = "gone"
    FAILED = "failed"


STARTING = {ReplicaState.SUBMITTED, ReplicaState.REGISTERED, ReplicaState.HEALTHY}
_STARTING_WORDS = {
    ReplicaState.SUBMITTED: "allocation starting",
    ReplicaState.REGISTERED: "engine starting",
    ReplicaState.HEALTHY: "engine loading the model",
}
_MAX_SESSIONS = 100_000
# What a service without replicas has: one shared empty mapping, never written.
_NONE: dict[str, LiveReplica] = {}
ACTIVE = STARTING | {ReplicaState.READY}


@dataclass
class LiveReplica:
    """What the control plane tracks about one replica while it lives."""

    id: str
    service: str
    backend: str
    state: ReplicaState = ReplicaState.SUBMITTED
    handle: str = ""
    base_url: str = ""
    token_hash: str = ""
    worker_token_hash: str = ""
    drain_token_hash: str = ""
    spec_hash: str = ""
    lent: bool = False
    preempted: bool = False
    in_flight: int = 0
    health_failures: int = 0
    suspect: bool = False
    stopping: bool = False
    retiring: bool = False
    # Wall-clock (Unix) seconds, as schedulers report them.
    ends_at_epoch: float | None = None
    starts_at_epoch: float | None = None
    node: str = ""
    pending_reason: str = ""
    watched: bool = False
    # Restored from the store after a restart; its stack has not yet said it still runs.
    unconfirmed: bool = False
    log_path: str = ""
    run_as: str = ""
    timeline: dict[str, float] = field(default_factory=dict)
    # Monotonic seconds: ages and intervals on this host only.
    created_monotonic: float = field(default_factory=time.monotonic)
    changed_monotonic: float = field(default_factory=time.monotonic)
    last_health_monotonic: float = 0.0

    def awaiting_allocation(self, clock: float, longer_than_s: float) -> bool:
        """Whether its scheduler has kept it waiting for over ``longer_than_s`` (monotonic)."""
        return (
            self.state is ReplicaState.SUBMITTED
            and "running" not in self.timeline
            and clock - self.created_monotonic > longer_than_s
        )


class ReplicaTable(MutableMapping[str, LiveReplica]):
    """Live replicas by id, also indexed by service.

    Routing and every reconcile step ask for one service's replicas; without
    the index each such question scanned the whole fleet, so a tick cost
    services x replicas and routing slowed with the size of the fleet. A
    replica's service never changes, so the index follows inserts and deletes.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, LiveReplica] = {}
        self._by_service: dict[str, dict[str, LiveReplica]] = {}

    def __getitem__(self, replica_id: str) -> LiveReplica:
        return self._by_id[replica_id]

    def __setitem__(self, replica_id: str, replica: LiveReplica) -> None:
        if replica_id in self._by_id:
            del self[replica_id]
        self._by_id[replica_id] = replica
        self._by_service.setdefault(replica.service, {})[replica_id] = replica

    def __delitem__(self, replica_id: str) -> None:
        replica = self._by_id.pop(replica_id)
        siblings = self._by_service[replica.service]
        del siblings[replica_id]
        if not siblings:
            del self._by_service[replica.service]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, replica_id: str, default: LiveReplica | None = None) -> LiveReplica | None:  # type: ignore[override]
        """The replica ``replica_id`` (the dict's own get: the routing path's)."""
        return self._by_id.get(replica_id, default)

    def values(self) -> ValuesView[LiveReplica]:
        """Every live replica (the dict's own view: no lookup per item)."""
        return self._by_id.values()

    def of_service(self, service: str) -> list[LiveReplica]:
        """The live replicas of one service, in the order they were added."""
        return list(self._by_service.get(service, {}).values())

    def in_service(self, service: str) -> ValuesView[LiveReplica]:
        """The live replicas of one service as a view (no copy: the routing path's)."""
        return self._by_service.get(service, _NONE).values()


class Lease(NamedTuple):
    """One request's hold on a replica; give it back with ``Fleet.release``.

    A named tuple: made once per request, ~4x cheaper than a frozen dataclass.
    """

    replica_id: str
    base_url: str


@dataclass(frozen=True)
class ModelEntry:
    """A model name clients may use, the service behind it and its canonical name."""

    name: str
    service: str
    canonical: str
    created: int
    private_to: int | None = None  # the only tenant that may use it, if private
    context_tokens: int | None = None  # what its engine's context holds, when known
    stops_only_streams: bool = False  # its engine stops for a client gone only when streaming
    endpoints: frozenset[str] | None = None  # chat, completions, embeddings; None: any
    text_only: bool = False  # its engine takes no images, audio or files


class Fleet:
    """Services and their replicas as the router and reconciler see them."""

    def __init__(self, on_demand: Callable[[str], None] = lambda _service: None) -> None:
        """``on_demand``: told the service a request is held for (it asks for a replica)."""
        self.services: dict[str, Service] = {}
        self.replicas = ReplicaTable()
        self.holding = HoldQueues(on_demand)
        self._models: dict[str, ModelEntry] = {}
        self._turn = itertools.count()
        self._affinity: dict[tuple[str, str], str] = {}
        self._peak: dict[str, int] = {}
        self.last_request: dict[str, float] = {}

    def set_services(
        self, services: Iterable[tuple[Service, int]], owners: Mapping[str, int] | None = None
    ) -> None:
        """Replace the set of routable services (with their creation times and owners)."""
        self.services = {}
        self._models = {}
        for service, created in services:
            self.services[service.name] = service
            private_to = (owners or {}).get(service.name) if service.private else None
            context, only_streams = context_tokens(service), stops_only_streams(service)
            serves = endpoints(service)
            for model in service.models:
                for name in (model.name, *model.aliases):
                    self._models[name] = ModelEntry(
                        name, service.name, model.name, created, private_to, context, only_streams,
                        serves, takes_text_only(service),
                    )  # fmt: skip

    def of_service(self, service: str) -> list[LiveReplica]:
        """The live replicas of one service."""
        return self.replicas.of_service(service)

    # the Router protocol

    def resolve(self, model: str) -> ModelEntry | None:
        """The service serving ``model`` (a name or an alias), if any."""
        return self._models.get(model)

    def models(self) -> list[ModelEntry]:
        """Every model name clients may use."""
        return list(self._models.values())

    def acquire(self, service: str, exclude: set[str], session: str = "") -> Lease | None:
        """Take the ready replica with the fewest requests in flight.

        With a ``session`` key, the replica that served the session before is
        taken while it is ready, so the engine can reuse its prompt cache.
        """
        if session:
            pinned = self.replicas.get(self._affinity.get((service, session), ""))
            if (
                pinned is not None
                and pinned.state is ReplicaState.READY
                and not pinned.suspect
                and pinned.id not in exclude
            ):
                pinned.in_flight += 1
                self._note_load(service)
                return Lease(pinned.id, pinned.base_url)
        lease = self._least_loaded(service, exclude)
        if lease is not None and session:
            if len(self._affinity) > _MAX_SESSIONS:
                self._affinity.clear()
            self._affinity[(service, session)] = lease.replica_id
        return lease

    def _least_loaded(self, service: str, exclude: set[str]) -> Lease | None:
        """One pass over the service's replicas: the ready one with the fewest in flight.

        Ties go round-robin (the turn rotates where the scan starts). A
        suspect replica (one request failed on it) is used only when no other
        is left: one transient error must not take a model offline.
        """
        replicas = self.replicas.in_service(service)
        count = len(replicas)
        if count <= 1:
            return self._only(service, replicas, exclude)
        offset = next(self._turn) % count
        best: LiveReplica | None = None
        best_rank = (0, 0)
        fallback: LiveReplica | None = None
        fallback_rank = (0, 0)
        in_flight_total = 0
        for position, replica in enumerate(replicas):
            in_flight_total += replica.in_flight
            if replica.state is not ReplicaState.READY or replica.id in exclude:
                continue
            rank = (replica.in_flight, (position - offset) % count)
            if replica.suspect:
                if fallback is None or rank < fallback_rank:
                    fallback, fallback_rank = replica, rank
            elif best is None or rank < best_rank:
                best, best_rank = replica, rank
        chosen = best or fallback
        if chosen is None:
            return None
        chosen.in_flight += 1
        self._peak[service] = max(self._peak.get(service, 0), in_flight_total + 1)
        self.last_request[service] = time.monotonic()
        return Lease(chosen.id, chosen.base_url)

    def _only(
        self, service: str, replicas: ValuesView[LiveReplica], exclude: set[str]
    ) -> Lease | None:
        """``_least_loaded`` of a service with one replica (or none): no ranking to do."""
        for replica in replicas:
            if replica.state is ReplicaState.READY and replica.id not in exclude:
                replica.in_flight += 1
                self._peak[service] = max(self._peak.get(service, 0), replica.in_flight)
                self.last_request[service] = time.monotonic()
                return Lease(replica.id, replica.base_url)
        return None

    def release(self, replica_id: str, failed: bool = False) -> None:
        """Give a replica back; ``failed`` marks it suspect until its next health check."""
        replica = self.replicas.get(replica_id)
        if replica is None:
            return
        replica.in_flight -= 1
        self.last_request[replica.service] = time.monotonic()
        if failed:
            replica.suspect = True
            replica.last_health_monotonic = 0.0

    def _note_load(self, service: str) -> None:
        now_in_flight = sum(r.in_flight for r in self.replicas.in_service(service))
        self._peak[service] = max(self._peak.get(service, 0), now_in_flight)
        self.last_request[service] = time.monotonic()

    def take_peak(self, service: str) -> int:
        """Peak requests in flight since the last call (at least the current count)."""
        current = sum(r.in_flight for r in self.of_service(service))
        return max(self._peak.pop(service, 0), current)

    # holding requests while replicas start

    def hold(self, service: str) -> Held | None:
        """Queue a request for ``service``; None when its queue is full."""
        spec = self.services.get(service)
        limit = spec.autoscaling.queue_size if spec else 0
        return self.holding.hold(service, limit)

    def unhold(self, held: Held) -> None:
        """Take a request out of the queue."""
        self.holding.unhold(held)

    async def wait(self, held: Held, timeout_s: float) -> None:
        """Wait until a replica of the held request's service may be ready."""
        await self.holding.wait(held, timeout_s)

    def queue_timeout_s(self, service: str) -> float:
        """How long a request may wait for a replica."""
        spec = self.services.get(service)
        return spec.autoscaling.queue_timeout_s if spec else 0.0

    def waiting_status(self, held: Held) -> str:
        """One line saying where a held request stands (for SSE comments)."""
        starting = [r for r in self.of_service(held.service) if r.state in STARTING]
        position = self.holding.position(held)
        if not starting:
            return f'queued position={position} state=SCALING reason="requesting a replica"'
        first = min(starting, key=lambda r: r.created_monotonic)
        state = "PENDING" if first.pending_reason else first.state.value.upper()
        if first.state is ReplicaState.SUBMITTED and not first.pending_reason:
            state = "STARTING"
        reason = first.pending_reason or _STARTING_WORDS.get(first.state, first.state.value)
        line = f'queued position={position} state={state} reason="{reason}"'
        if first.starts_at_epoch:
            line += f" eta={max(0, round(first.starts_at_epoch - time.time()))}s"
        return line

    def ready_count(self, service: str) -> int:
        """How many replicas of ``service`` take traffic now."""
        return sum(
            1 for r in self.of_service(service) if r.state is ReplicaState.READY and not r.suspect
        )
