"""What the reconciler needs from the functions broker to run FunctionPool replicas.

A pool replica is an allocation running one worker manager. It is ready when
its worker has joined the broker (not when an HTTP probe answers), its load
is the pool's queued and running tasks, and it drains by getting no new
tasks. The functions package implements this; ``control`` only asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PoolLoad:
    """A pool's work now: tasks queued and running, and when the last one came."""

    queued: int
    running: int
    last_submit: float | None  # monotonic time, None if none yet


class Pools(Protocol):
    """The broker, as the reconciler sees it.

    Attributes:
        worker_address: Where workers connect, ``tcp://HOST:PORT``.
        public_key: The broker's Curve public key (Z85), which workers pin.
    """

    worker_address: str
    public_key: str

    def expect(self, replica_id: str, token_hash: str) -> None:
        """Admit a worker that presents the token hashing to ``token_hash``."""
        ...

    def forget(self, replica_id: str) -> None:
        """The replica is gone: admit no worker for it any more."""
        ...

    def joined(self, replica_id: str) -> bool:
        """Whether the replica's worker is connected now."""
        ...

    def running(self, replica_id: str) -> int:
        """Tasks the replica's worker runs now."""
        ...

    def load(self, pool: str) -> PoolLoad:
        """Queued and running tasks of ``pool``."""
        ...

    def drain(self, replica_id: str) -> None:
        """Send the replica's worker no new tasks."""
        ...
