"""The functions broker: workers connect out to it, executors submit through it.

The broker binds two ROUTER sockets. Workers (one manager per allocation)
connect out, register with their pool and capacity, and exchange heartbeats
with the broker. Executors submit batches of tasks to a pool's FIFO queue; the
broker hands queued tasks to that pool's workers while they have free slots
and routes each result back to the executor that submitted it::

    executors --SUBMIT--> [client ROUTER] -> pool queue --TASKS--> [worker ROUTER] -> workers
    executors <-RESULTS-- [client ROUTER] <---------------RESULTS-- [worker ROUTER] <- workers

A worker silent for ``heartbeat_misses`` heartbeats is lost: each task it
held goes back to the front of its queue, and a task lost more than
``max_retries`` times fails with "worker lost N times". Payloads stay opaque
bytes here; the broker never unpickles user data.

One thread runs the broker: it polls both sockets, drains each of whatever
has arrived (up to a slice, so neither side starves the other), then
dispatches once. ``start``, ``stop`` and ``stats`` are async or thread-safe
wrappers around it; the bookkeeping lives in ``_scheduler``.

Inside ``aifactory up`` a :class:`BrokerGate` admits executors by API key
and workers by their replica's one-time token, and hears of workers joining
and leaving (the control plane's readiness signal) and of work queued where
no worker serves (its scale-from-zero signal). A broker run alone admits all.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import zmq

from aifactory.functions import protocol as p
from aifactory.functions._scheduler import BrokerStats, Message, PoolEvent, Scheduler
from aifactory.functions.curve import serve_curve

__all__ = ["Broker", "BrokerGate", "BrokerStats", "PoolEvent", "main"]

logger = logging.getLogger(__name__)

# What a message that is not what its kind says raises while it is read.
_MALFORMED = (ValueError, IndexError, struct.error)

_SLICE = 256  # messages read from one socket before the loop dispatches


class BrokerGate(Protocol):
    """Who may connect, and who hears what happens; called on the broker's thread."""

    def admit_client(self, hello: dict[str, Any]) -> str | None:
        """None to admit an executor's hello, else why it is refused."""
        ...

    def admit_worker(self, registration: dict[str, Any]) -> str | None:
        """None to admit a worker's registration, else why it is refused."""
        ...

    def notify(self, events: list[PoolEvent]) -> None:
        """Workers joined or left, or tasks wait where no worker serves."""
        ...

    def charge(self, usage: list[tuple[str, str, int, float]]) -> None:
        """Tasks done since the last call: (API key, pool, tasks, seconds on workers)."""
        ...


class Broker:
    """Queues function tasks per pool and feeds them to connected workers.

    Args:
        worker_address: Where workers connect, e.g. ``tcp://0.0.0.0:0`` (0 picks a port).
        client_address: Where executors connect.
        spill_dir: Shared directory for payloads over ``spill_threshold`` bytes;
            None keeps every payload in messages.
        spill_threshold: Payload size above which executors and workers spill.
        heartbeat_s: Seconds between heartbeats, both ways.
        heartbeat_misses: Heartbeats a worker may miss before it is declared lost.
        max_retries: Times a task is requeued after losing its worker.
        gate: Admits executors and workers and hears pool events; None admits all.
        secret_key: The broker's Curve secret key (Z85); clients then pin its
            public key (:attr:`public_key`). None serves in clear (benchmarks).
    """

    def __init__(
        self,
        worker_address: str = "tcp://127.0.0.1:0",
        client_address: str = "tcp://127.0.0.1:0",
        *,
        spill_dir: Path | None = None,
        spill_threshold: int = p.DEFAULT_SPILL_THRESHOLD,
        heartbeat_s: float = 1.0,
        heartbeat_misses: int = 3,
        max_retries: int = 3,
        gate: BrokerGate | None = None,
        secret_key: str | None = None,
    ) -> None:
        self._gate = gate
        self._secret_key = secret_key
        self.public_key = zmq.curve_public(secret_key.encode()).decode() if secret_key else None
        # Admitted executors (with a gate): identity -> (pool, API key).
        self._clients: dict[bytes, tuple[str, str]] = {}
        self._worker_bind = worker_address
        self._client_bind = client_address
        self.spill_dir = spill_dir
        self.spill_threshold = spill_threshold
        self.heartbeat_s = heartbeat_s
        self.heartbeat_misses = heartbeat_misses
        self.max_retries = max_retries
        self.worker_address = ""
        self.client_address = ""
        spill_root = os.path.realpath(spill_dir) if spill_dir is not None else None
        self._scheduler = Scheduler(max_retries, spill_root)
        self._lock = threading.Lock()  # held by the loop while it changes state
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._workers_socket: zmq.Socket[bytes] | None = None
        self._clients_socket: zmq.Socket[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r = self._wake_w = -1
        self._deleter: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> tuple[str, str]:
        """Bind both sockets and start the loop's thread.

        Returns:
            The bound worker and client addresses, ports filled in.
        """
        self._context = zmq.Context()
        self._workers_socket = self._bind(self._worker_bind)
        self._clients_socket = self._bind(self._client_bind)
        self.worker_address = self._workers_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.client_address = self._clients_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="functions-broker", daemon=True)
        self._thread.start()
        logger.info(
            "functions broker: workers at %s, clients at %s",
            self.worker_address,
            self.client_address,
        )
        return self.worker_address, self.client_address

    async def stop(self) -> None:
        """Stop the loop and close the sockets; queued tasks are dropped."""
        if self._thread is not None:
            self._stopping = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._deleter is not None:
            self._deleter.shutdown(wait=True)
            self._deleter = None
        if self._context is not None:
            self._context.term()
        self._context = None
        self._workers_socket = self._clients_socket = None

    def stats(self) -> BrokerStats:
        """Current counters: workers, slots, queued, running, done and failed tasks."""
        with self._lock:
            return self._scheduler.stats()

    def drain(self, replica: str) -> None:
        """Send no new tasks to ``replica``'s workers (thread-safe)."""
        with self._lock:
            self._scheduler.drain(replica)

    def _bind(self, address: str) -> zmq.Socket[bytes]:
        assert self._context is not None
        sock = self._context.socket(zmq.ROUTER)
        # Unlimited queues: a full ROUTER drops messages silently, and a
        # dropped task would hang its future; big payloads are spilled anyway.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        if self._secret_key is not None:
            serve_curve(sock, self._secret_key)
        sock.bind(address)  # port 0 picks a free port; LAST_ENDPOINT names it
        return sock

    def _welcome(self) -> bytes:
        return p.encode_json(
            p.WELCOME,
            {
                "spill_dir": str(self.spill_dir) if self.spill_dir else None,
                "spill_threshold": self.spill_threshold,
                "heartbeat_s": self.heartbeat_s,
            },
        )

    # -- the loop's thread -------------------------------------------------

    def _run(self) -> None:
        workers, clients = self._workers_socket, self._clients_socket
        assert workers is not None and clients is not None
        poller = zmq.Poller()
        poller.register(workers, zmq.POLLIN)
        poller.register(clients, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self.heartbeat_s
        try:
            while not self._stopping:
                timeout = max(0.0, next_heartbeat - time.monotonic())
                ready = dict(poller.poll(int(timeout * 1000) + 1))
                if self._wake_r in ready:
                    os.read(self._wake_r, 512)
                with self._lock:
                    self._drain(workers, self._from_worker, "worker", refuse=False)
                    self._drain(clients, self._from_client, "client", refuse=True)
                    if time.monotonic() >= next_heartbeat:
                        self._check_heartbeats(workers)
                        self._charge()
                        next_heartbeat = time.monotonic() + self.heartbeat_s
                    self._flush(workers, clients)
        except Exception:
            logger.exception("functions broker loop failed")
            raise
        finally:
            workers.close(linger=0)
            clients.close(linger=0)

    def _drain(
        self,
        sock: zmq.Socket[bytes],
        handle: Callable[[zmq.Socket[bytes], list[bytes]], None],
        side: str,
        refuse: bool,
    ) -> None:
        """Handle what ``side`` sent, a slice at a time; a malformed message is dropped."""
        for _ in range(_SLICE):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                handle(sock, frames)
            except _MALFORMED as exc:
                logger.warning("functions broker: dropped a malformed %s message: %s", side, exc)
                if refuse:
                    refusal = {"error": f"malformed message: {exc}"}
                    sock.send_multipart([frames[0], p.encode_json(p.REFUSED, refusal)])

    def _from_worker(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        scheduler = self._scheduler
        identity, head = frames[0], frames[1]
        kind = head[:1]
        worker = scheduler.workers.get(identity)
        if worker is not None:
            worker.last_seen = time.monotonic()
        if kind == p.RESULTS and worker is not None:
            scheduler.results(worker, frames[2:])
        elif kind == p.HEARTBEAT and worker is not None:
            pass
        elif kind == p.REGISTER:
            body = p.decode_json(head)
            refusal = self._gate.admit_worker(body) if self._gate else None
            if refusal is None:
                scheduler.register(identity, body)
                sock.send_multipart([identity, self._welcome()])
            else:
                logger.warning("refused a worker for pool %s: %s", body.get("pool"), refusal)
                sock.send_multipart([identity, p.encode_json(p.REFUSED, {"error": refusal})])
        elif kind == p.GOODBYE and worker is not None:
            scheduler.lose_worker(worker, "said goodbye", unstarted=set(p.unpack_ids(head)))
        elif worker is None:
            # A worker we declared lost, or one from before a restart.
            if kind == p.RESULTS:
                scheduler.drop_results(frames[2:])
            sock.send_multipart([identity, p.RECONNECT])

    def _from_client(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        scheduler = self._scheduler
        identity, head = frames[0], frames[1]
        kind = head[:1]
        if kind == p.HELLO:
            self._hello(sock, identity, p.decode_json(head))
        elif self._gate is not None and identity not in self._clients:
            refusal = {"error": "say hello with a valid API key first"}
            sock.send_multipart([identity, p.encode_json(p.REFUSED, refusal)])
        elif kind == p.SUBMIT:
            pool = head[1:].decode()
            if self._gate is not None and self._clients[identity][0] != pool:
                admitted = self._clients[identity][0]
                refusal = {"error": f"this executor was admitted to pool {admitted!r} only"}
                sock.send_multipart([identity, p.encode_json(p.REFUSED, refusal)])
            else:
                scheduler.submit(identity, pool, frames[2:])
        elif kind == p.CANCEL:
            scheduler.cancel(identity, p.unpack_ids(head))
        elif kind == p.BYE:
            scheduler.bye(identity)
            self._clients.pop(identity, None)

    def _hello(self, sock: zmq.Socket[bytes], identity: bytes, body: dict[str, Any]) -> None:
        refusal = self._gate.admit_client(body) if self._gate else None
        if refusal is None:
            self._clients[identity] = (str(body.get("pool") or ""), str(body.get("api_key")))
            sock.send_multipart([identity, self._welcome()])
        else:
            sock.send_multipart([identity, p.encode_json(p.REFUSED, {"error": refusal})])

    def _charge(self) -> None:
        busy, self._scheduler.busy = self._scheduler.busy, {}
        if self._gate is None or not busy:
            return
        usage = [
            (*self._clients[identity][::-1], int(done), seconds)
            for identity, (done, seconds) in busy.items()
            if identity in self._clients
        ]
        if usage:
            self._gate.charge(usage)

    def _check_heartbeats(self, sock: zmq.Socket[bytes]) -> None:
        deadline = time.monotonic() - self.heartbeat_s * self.heartbeat_misses
        for worker in list(self._scheduler.workers.values()):
            if worker.last_seen < deadline:
                self._scheduler.lose_worker(worker, f"missed {self.heartbeat_misses} heartbeats")
            else:
                sock.send_multipart([worker.identity, p.HEARTBEAT])

    def _flush(self, workers: zmq.Socket[bytes], clients: zmq.Socket[bytes]) -> None:
        """Send what the scheduler produced: replies first, then new work."""
        scheduler = self._scheduler
        outbox: list[Message]
        outbox, scheduler.outbox = scheduler.outbox, []
        for message in outbox:
            clients.send_multipart(message, copy=False)
        for message in scheduler.dispatch():
            workers.send_multipart(message, copy=False)
        if scheduler.events:
            events, scheduler.events = scheduler.events, []
            if self._gate is not None:
                self._gate.notify(events)
        if scheduler.deletes:
            paths, scheduler.deletes = scheduler.deletes, []
            if self._deleter is None:
                self._deleter = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="functions-broker-spill"
                )
            self._deleter.submit(_unlink, paths)


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _serve_until_signalled(broker: Broker) -> None:
    workers, clients = await broker.start()
    addresses = {"worker_address": workers, "client_address": clients}
    print(json.dumps({**addresses, "server_key": broker.public_key}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a broker alone (benchmarks, debugging); prints its addresses and public key as JSON.

    It makes a fresh Curve keypair unless ``--plain`` asks for clear text.
    """
    parser = argparse.ArgumentParser(prog="python -m aifactory.functions.broker")
    parser.add_argument("--worker-address", default="tcp://127.0.0.1:0")
    parser.add_argument("--client-address", default="tcp://127.0.0.1:0")
    parser.add_argument("--spill-dir", type=Path, default=None)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="no CurveZMQ: traffic in clear")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    broker = Broker(
        args.worker_address,
        args.client_address,
        spill_dir=args.spill_dir,
        heartbeat_s=args.heartbeat_s,
        max_retries=args.max_retries,
        secret_key=None if args.plain else zmq.curve_keypair()[1].decode(),
    )
    asyncio.run(_serve_until_signalled(broker))
    return 0


if __name__ == "__main__":
    sys.exit(main())
