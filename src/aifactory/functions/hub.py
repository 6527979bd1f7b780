"""The functions broker inside ``aifactory up``: who may connect, and what pools need.

The hub runs the :class:`Broker` on the control plane's host and is its
:class:`BrokerGate`: an executor is admitted by a valid API key of the pool's
own tenant (:mod:`.access`), a worker by the token its replica was launched
with. Both talk CurveZMQ to it (:mod:`.curve`): the broker's keypair lives
in the data directory, and its public key is pinned by workers (on their
command line) and executors (from the pool's status).

The hub's broker keeps no spill directory: every payload travels in
messages. One directory shared by every pool would let one tenant's worker
read another's arguments and results, and a tenant's executor name another
tenant's spill file for the broker to read back; ZeroMQ carries large frames
without copying them. It is also what the reconciler sees
of the broker (``control.pools.Pools``): which replicas' workers have
joined, how much work each pool has, and which replica to drain::

    reconciler --expect(replica, token)--> hub <--REGISTER(replica, token)-- worker
    reconciler <--------wake------------- hub <--joined / left / demand---- broker
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import zmq

from aifactory.config import Settings
from aifactory.control import PoolLoad
from aifactory.errors import ConfigError
from aifactory.functions.broker import Broker, BrokerStats, PoolEvent
from aifactory.functions.curve import broker_keypair
from aifactory.tenancy import KeyAuthenticator, Principal, UsageLedger, hash_key

__all__ = ["FunctionsHub"]

logger = logging.getLogger(__name__)

_STATS_TTL_S = 0.05  # one broker snapshot serves a whole reconcile tick
BROKER_KEY_FILE = "functions-broker.key"  # the broker's Curve secret key, in the data directory


class FunctionsHub:
    """Runs the broker for the control plane and admits who connects to it.

    Args:
        settings: Ports, heartbeat and retry policy, the data directory.
        authenticator: Checks executors' API keys.
        on_change: Called on the event loop when a worker joins or leaves or
            work waits where no worker serves (the reconciler's ``wake``).
        code_refusal: Why a principal may not submit code to a pool, None if it may
            (blocking: it reads the store).
        ledger: Where executors' tasks and worker-seconds are charged to their tenants.
    """

    def __init__(
        self,
        settings: Settings,
        authenticator: KeyAuthenticator,
        on_change: Callable[[], None],
        code_refusal: Callable[[str, Principal], str | None],
        ledger: UsageLedger | None = None,
    ) -> None:
        self.internal_key = secrets.token_urlsafe(32)  # the HTTP invoker's own executors
        self._authenticator = authenticator
        self._on_change = on_change
        self._code_refusal = code_refusal
        self._ledger = ledger
        self._expected: dict[str, str] = {}  # replica id -> hash of its worker token
        self._joined: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats: tuple[float, BrokerStats] | None = None
        bind = settings.host or "0.0.0.0"
        self._ports = f"{settings.functions_worker_port} and {settings.functions_client_port}"
        self._advertise = settings.advertise_host
        self.public_key, secret_key = broker_keypair(settings.data_dir / BROKER_KEY_FILE)
        self.broker = Broker(
            f"tcp://{bind}:{settings.functions_worker_port}",
            f"tcp://{bind}:{settings.functions_client_port}",
            heartbeat_s=settings.functions_heartbeat_s,
            max_retries=settings.functions_max_retries,
            gate=self,
            secret_key=secret_key,
        )
        self.worker_address = ""
        self.client_address = ""

    async def start(self) -> None:
        """Bind the broker's sockets and start its thread."""
        self._loop = asyncio.get_running_loop()
        try:
            workers, clients = await self.broker.start()
        except zmq.ZMQError as exc:
            raise ConfigError(
                f"the functions broker cannot listen on ports {self._ports}: {exc}.",
                fix="set AIFACTORY_FUNCTIONS_WORKER_PORT and AIFACTORY_FUNCTIONS_CLIENT_PORT "
                "to free ports (0 picks any)",
            ) from exc
        self.worker_address = self._advertised(workers)
        self.client_address = self._advertised(clients)

    async def stop(self) -> None:
        """Stop the broker; queued tasks are dropped."""
        await self.broker.stop()

    def _advertised(self, bound: str) -> str:
        return f"tcp://{self._advertise}:{bound.rsplit(':', 1)[1]}"

    # -- BrokerGate, called on the broker's thread --------------------------

    def admit_client(self, hello: dict[str, Any]) -> str | None:
        """Admit an executor by a valid key of the pool's tenant (or the invoker's internal key).

        Executors ship pickled code, so other tenants' keys, administrators'
        too, are refused; to them a private pool does not exist.
        """
        key = hello.get("api_key")
        if not isinstance(key, str) or not key:
            return "no API key; pass api_key= or set AIFACTORY_API_KEY"
        if self._is_internal(key):
            return None
        principal = self._authenticator.authenticate_blocking(key)
        if principal is None:
            return "the API key is not valid (unknown, revoked or expired)"
        return self._code_refusal(str(hello.get("pool") or ""), principal)

    def _is_internal(self, key: str) -> bool:
        # As bytes: compare_digest raises on str with non-ASCII characters.
        return hmac.compare_digest(key.encode(), self.internal_key.encode())

    def admit_worker(self, registration: dict[str, Any]) -> str | None:
        """Admit a worker that shows the token its replica was launched with."""
        replica = str(registration.get("replica") or "")
        token = str(registration.get("token") or "")
        expected = self._expected.get(replica)
        if expected is None:
            return f"replica {replica!r} is not one this control plane started"
        if not hmac.compare_digest(expected, hash_key(token)):
            return f"wrong token for replica {replica!r}"
        return None

    def notify(self, events: list[PoolEvent]) -> None:
        """Track joined replicas; wake the reconciler on the event loop."""
        for event in events:
            if event.kind == "joined":
                self._joined.add(event.replica)
            elif event.kind == "left":
                self._joined.discard(event.replica)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_change)

    def charge(self, usage: list[tuple[str, str, int, float]]) -> None:
        """Charge executors' tasks to their keys' tenants (HTTP calls are charged per call)."""
        if self._ledger is None:
            return
        for key, pool, tasks, seconds in usage:
            if self._is_internal(key):
                continue
            principal = self._authenticator.authenticate_blocking(key)
            if principal is None or self._loop is None or self._loop.is_closed():
                continue
            # The ledger belongs to the event loop; this runs on the broker's thread.
            self._loop.call_soon_threadsafe(
                functools.partial(
                    self._ledger.record,
                    tenant_id=principal.tenant_id,
                    key_id=principal.key_id,
                    kind="function",
                    model=pool,
                    endpoint="functions.tasks",
                    calls=tasks,
                    seconds=seconds,
                )
            )

    # -- Pools, for the reconciler ------------------------------------------

    def expect(self, replica_id: str, token_hash: str) -> None:
        """Admit a worker that presents the token hashing to ``token_hash``."""
        self._expected[replica_id] = token_hash

    def forget(self, replica_id: str) -> None:
        """Admit no worker for ``replica_id`` any more."""
        self._expected.pop(replica_id, None)

    def joined(self, replica_id: str) -> bool:
        """Whether the replica's worker is connected now."""
        return replica_id in self._joined

    def running(self, replica_id: str) -> int:
        """Tasks the replica's worker runs now."""
        return self.stats().replicas.get(replica_id, {}).get("running", 0)

    def load(self, pool: str) -> PoolLoad:
        """Queued and running tasks of ``pool``, and when its last task came."""
        stats = self.stats()
        counts = stats.pools.get(pool, {})
        return PoolLoad(
            queued=counts.get("queued", 0),
            running=counts.get("running", 0),
            last_submit=stats.last_submit.get(pool),
        )

    def drain(self, replica_id: str) -> None:
        """Send the replica's worker no new tasks."""
        self.broker.drain(replica_id)

    def stats(self) -> BrokerStats:
        """The broker's counters, at most ``_STATS_TTL_S`` old."""
        now = time.monotonic()
        if self._stats is None or now - self._stats[0] > _STATS_TTL_S:
            self._stats = (now, self.broker.stats())
        return self._stats[1]
