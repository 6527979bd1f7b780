"""What the gateway asks of the control plane to route a request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Lease(Protocol):
    """A request's hold on one replica."""

    @property
    def replica_id(self) -> str:
        """The replica's id."""
        ...

    @property
    def base_url(self) -> str:
        """Where the replica's engine listens (``http://host:port``)."""
        ...


class ModelInfo(Protocol):
    """A model name clients may use."""

    @property
    def name(self) -> str:
        """The model name or alias."""
        ...

    @property
    def service(self) -> str:
        """The service that serves it."""
        ...

    @property
    def canonical(self) -> str:
        """The model's canonical name (what usage is recorded under)."""
        ...

    @property
    def created(self) -> int:
        """Unix time the serving service was created."""
        ...

    @property
    def private_to(self) -> int | None:
        """The only tenant whose keys may use it, when it is private."""
        ...

    @property
    def context_tokens(self) -> int | None:
        """How many tokens its engine's context holds, when known."""
        ...

    @property
    def stops_only_streams(self) -> bool:
        """Whether its engine stops for a client gone only while streaming to it."""
        ...

    @property
    def endpoints(self) -> frozenset[str] | None:
        """The endpoints its engine serves (chat, completions, embeddings); None: any."""
        ...

    @property
    def text_only(self) -> bool:
        """Whether its engine takes text only (no images, audio or files)."""
        ...


class Router(Protocol):
    """Picks replicas for the gateway.

    ::

        resolve(model)            -> ModelInfo (service, canonical name), or None (404)
        acquire(service, exclude) -> Lease, or None (no ready replica)
        hold(service) / wait / unhold -> wait in the service's queue while replicas start
        release(replica_id, failed) -> the replica's load drops; failed marks it suspect
    """

    def resolve(self, model: str) -> ModelInfo | None:
        """The model entry for a name or alias."""
        ...

    def models(self) -> Sequence[ModelInfo]:
        """Every model name clients may use."""
        ...

    def acquire(self, service: str, exclude: set[str], session: str = "") -> Lease | None:
        """Take the least-loaded ready replica not in ``exclude`` (or the session's)."""
        ...

    def ready_count(self, service: str) -> int:
        """How many replicas of ``service`` take traffic now."""
        ...

    def hold(self, service: str) -> Any:
        """Queue a request while no replica is ready; None when the queue is full."""
        ...

    def unhold(self, held: Any) -> None:
        """Take a request out of the queue."""
        ...

    async def wait(self, held: Any, timeout_s: float) -> None:
        """Sleep until a replica may be ready, or ``timeout_s``."""
        ...

    def queue_timeout_s(self, service: str) -> float:
        """How long a request may be held."""
        ...

    def waiting_status(self, held: Any) -> str:
        """Where a held request stands, in one line."""
        ...

    def release(self, replica_id: str, failed: bool = False) -> None:
        """Give the replica back."""
        ...
