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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from aifactory.functions import protocol as p

__all__ = ["Broker", "BrokerStats", "main"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerStats:
    """Counters for a status endpoint; ``done`` and ``failed`` count since start."""

    workers: int
    capacity: int
    queued: int
    running: int
    done: int
    failed: int
    pools: dict[str, dict[str, int]]


@dataclass(eq=False)
class _Task:
    id: int
    client: bytes
    client_task_id: int
    pool: str
    timeout_s: float
    flags: int
    payload: Any  # bytes or zmq.Frame, passed through untouched
    attempts: int = 0
    worker: _Worker | None = None
    cancelled: bool = False


@dataclass(eq=False)
class _Worker:
    identity: bytes
    pool: str
    capacity: int
    last_seen: float
    running: dict[int, _Task] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


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
    ) -> None:
        self._worker_bind = worker_address
        self._client_bind = client_address
        self.spill_dir = spill_dir
        self.spill_threshold = spill_threshold
        self.heartbeat_s = heartbeat_s
        self.heartbeat_misses = heartbeat_misses
        self.max_retries = max_retries
        self.worker_address = ""
        self.client_address = ""
        self._context: zmq.asyncio.Context | None = None
        self._workers_socket: zmq.asyncio.Socket | None = None
        self._clients_socket: zmq.asyncio.Socket | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._workers: dict[bytes, _Worker] = {}
        self._queues: dict[str, deque[_Task]] = {}
        self._queued: dict[str, int] = {}
        self._tasks: dict[int, _Task] = {}
        self._by_client: dict[tuple[bytes, int], _Task] = {}
        self._next_id = 0
        self._done = 0
        self._failed = 0
        self._pending_failures: list[tuple[_Task, str]] = []
        self._pending_deletes: list[str] = []
        self._delete_tasks: set[asyncio.Future[None]] = set()
        self._spill_root = os.path.realpath(spill_dir) if spill_dir is not None else None

    async def start(self) -> tuple[str, str]:
        """Bind both sockets and start the loops.

        Returns:
            The bound worker and client addresses, ports filled in.
        """
        self._context = zmq.asyncio.Context()
        self._workers_socket = self._bind(self._worker_bind)
        self._clients_socket = self._bind(self._client_bind)
        self.worker_address = self._workers_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.client_address = self._clients_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._loops = [
            asyncio.create_task(self._serve_workers(), name="functions-broker-workers"),
            asyncio.create_task(self._serve_clients(), name="functions-broker-clients"),
            asyncio.create_task(self._check_heartbeats(), name="functions-broker-heartbeats"),
        ]
        logger.info(
            "functions broker: workers at %s, clients at %s",
            self.worker_address,
            self.client_address,
        )
        return self.worker_address, self.client_address

    async def stop(self) -> None:
        """Stop the loops and close the sockets; queued tasks are dropped."""
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self._loops = []
        for sock in (self._workers_socket, self._clients_socket):
            if sock is not None:
                sock.close(linger=0)
        if self._context is not None:
            self._context.term()
        self._context = None
        self._workers_socket = self._clients_socket = None

    def stats(self) -> BrokerStats:
        """Current counters: workers, slots, queued, running, done and failed tasks."""
        pools: dict[str, dict[str, int]] = {}
        for name in set(self._queued) | {w.pool for w in self._workers.values()}:
            members = [w for w in self._workers.values() if w.pool == name]
            pools[name] = {
                "workers": len(members),
                "capacity": sum(w.capacity for w in members),
                "queued": self._queued.get(name, 0),
                "running": sum(len(w.running) for w in members),
            }
        return BrokerStats(
            workers=len(self._workers),
            capacity=sum(w.capacity for w in self._workers.values()),
            queued=sum(self._queued.values()),
            running=sum(len(w.running) for w in self._workers.values()),
            done=self._done,
            failed=self._failed,
            pools=pools,
        )

    def _bind(self, address: str) -> zmq.asyncio.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.ROUTER)
        # Unlimited queues: a full ROUTER drops messages silently, and a
        # dropped task would hang its future; big payloads are spilled anyway.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(address)  # port 0 picks a free port; LAST_ENDPOINT names it
        return sock

    # -- workers -----------------------------------------------------------

    async def _serve_workers(self) -> None:
        assert self._workers_socket is not None
        sock = self._workers_socket
        while True:
            frames = await sock.recv_multipart(copy=True)
            identity, head, rest = frames[0], frames[1], frames[2:]
            kind = head[:1]
            worker = self._workers.get(identity)
            if worker is not None:
                worker.last_seen = time.monotonic()
            if kind == p.RESULTS and worker is not None:
                await self._on_results(worker, rest)
            elif kind == p.HEARTBEAT and worker is not None:
                pass
            elif kind == p.REGISTER:
                await self._on_register(identity, p.decode_json(head))
            elif kind == p.GOODBYE and worker is not None:
                self._lose_worker(worker, "said goodbye", unstarted=set(p.unpack_ids(head)))
            elif worker is None:
                # A worker we declared lost, or one from before a restart.
                if kind == p.RESULTS:
                    self._drop_spilled_results(rest)
                await sock.send_multipart([identity, p.RECONNECT])
                continue
            await self._dispatch()

    async def _on_register(self, identity: bytes, body: dict[str, Any]) -> None:
        assert self._workers_socket is not None
        old = self._workers.pop(identity, None)
        if old is not None:
            self._lose_worker(old, "registered again")
        worker = _Worker(
            identity=identity,
            pool=str(body.get("pool", "default")),
            capacity=max(1, int(body.get("capacity", 1))),
            last_seen=time.monotonic(),
        )
        self._workers[identity] = worker
        logger.info(
            "functions worker %s joined pool %s with %d slots (host %s, pid %s)",
            identity.hex()[:8],
            worker.pool,
            worker.capacity,
            body.get("host"),
            body.get("pid"),
        )
        await self._workers_socket.send_multipart([identity, self._welcome()])

    def _welcome(self) -> bytes:
        return p.encode_json(
            p.WELCOME,
            {
                "spill_dir": str(self.spill_dir) if self.spill_dir else None,
                "spill_threshold": self.spill_threshold,
                "heartbeat_s": self.heartbeat_s,
            },
        )

    async def _on_results(self, worker: _Worker, frames: list[bytes]) -> None:
        assert self._clients_socket is not None
        replies: dict[bytes, list[bytes]] = {}
        for i in range(0, len(frames) - 1, 2):
            task_id, status, flags = p.RESULT_HEADER.unpack(frames[i])
            task = worker.running.pop(task_id, None)
            if task is None:  # requeued after a loss, now answered twice
                self._drop_spilled_results(frames[i : i + 2])
                continue
            if status == p.STATUS_CRASHED:
                self._retry(task, "the process running it died")
                continue
            self._finish(task, failed=status != p.STATUS_OK)
            out = replies.setdefault(task.client, [task.client, p.RESULTS])
            out.append(p.RESULT_HEADER.pack(task.client_task_id, status, flags))
            out.append(frames[i + 1])
        for message in replies.values():
            await self._clients_socket.send_multipart(message, copy=False)

    def _finish(self, task: _Task, *, failed: bool) -> None:
        self._tasks.pop(task.id, None)
        self._by_client.pop((task.client, task.client_task_id), None)
        if failed:
            self._failed += 1
        else:
            self._done += 1
        if task.flags & p.SPILLED:
            self._delete_spill(task.payload)

    def _lose_worker(self, worker: _Worker, why: str, unstarted: set[int] | None = None) -> None:
        self._workers.pop(worker.identity, None)
        logger.warning(
            "functions worker %s of pool %s %s; requeueing %d tasks",
            worker.identity.hex()[:8],
            worker.pool,
            why,
            len(worker.running),
        )
        # Requeue in reverse so the oldest task ends up first in the queue.
        for task in reversed(list(worker.running.values())):
            if unstarted is not None and task.id in unstarted:
                self._requeue(task)
            else:
                self._retry(task, f"worker {why}")
        worker.running.clear()

    def _retry(self, task: _Task, why: str) -> None:
        task.attempts += 1
        if task.attempts > self.max_retries:
            self._finish(task, failed=True)
            reason = f"worker lost {task.attempts} times (last: {why})"
            self._pending_failures.append((task, reason))
            return
        self._requeue(task)

    def _requeue(self, task: _Task) -> None:
        task.worker = None
        self._queues.setdefault(task.pool, deque()).appendleft(task)
        self._queued[task.pool] = self._queued.get(task.pool, 0) + 1

    async def _send_failures(self) -> None:
        assert self._clients_socket is not None
        failures, self._pending_failures = self._pending_failures, []
        for task, reason in failures:
            logger.warning("functions task %d failed: %s", task.id, reason)
            await self._clients_socket.send_multipart(
                [
                    task.client,
                    p.RESULTS,
                    p.RESULT_HEADER.pack(task.client_task_id, p.STATUS_LOST, 0),
                    reason.encode(),
                ]
            )

    async def _check_heartbeats(self) -> None:
        assert self._workers_socket is not None
        while True:
            await asyncio.sleep(self.heartbeat_s)
            deadline = time.monotonic() - self.heartbeat_s * self.heartbeat_misses
            for worker in list(self._workers.values()):
                if worker.last_seen < deadline:
                    self._lose_worker(worker, f"missed {self.heartbeat_misses} heartbeats")
                else:
                    await self._workers_socket.send_multipart([worker.identity, p.HEARTBEAT])
            await self._dispatch()

    # -- clients -----------------------------------------------------------

    async def _serve_clients(self) -> None:
        assert self._clients_socket is not None
        sock = self._clients_socket
        while True:
            frames = await sock.recv_multipart(copy=True)
            identity, head, rest = frames[0], frames[1], frames[2:]
            kind = head[:1]
            if kind == p.SUBMIT:
                self._on_submit(identity, head[1:].decode(), rest)
                await self._dispatch()
            elif kind == p.CANCEL:
                await self._on_cancel(identity, p.unpack_ids(head))
            elif kind == p.HELLO:
                await sock.send_multipart([identity, self._welcome()])
            elif kind == p.BYE:
                self._on_bye(identity)

    def _on_submit(self, client: bytes, pool: str, frames: list[bytes]) -> None:
        queue = self._queues.setdefault(pool, deque())
        count = 0
        for i in range(0, len(frames) - 1, 2):
            client_task_id, timeout_s, flags = p.TASK_HEADER.unpack(frames[i])
            self._next_id += 1
            task = _Task(
                id=self._next_id,
                client=client,
                client_task_id=client_task_id,
                pool=pool,
                timeout_s=timeout_s,
                flags=flags,
                payload=frames[i + 1],
            )
            self._tasks[task.id] = task
            self._by_client[(client, client_task_id)] = task
            queue.append(task)
            count += 1
        self._queued[pool] = self._queued.get(pool, 0) + count

    async def _on_cancel(self, client: bytes, ids: tuple[int, ...]) -> None:
        assert self._clients_socket is not None
        entries = []
        for client_task_id in ids:
            task = self._by_client.get((client, client_task_id))
            removed = task is not None and task.worker is None and not task.cancelled
            if task is not None and removed:
                self._cancel_queued(task)
            entries.append(p.CANCEL_ENTRY.pack(client_task_id, int(removed)))
        await self._clients_socket.send_multipart([client, p.CANCELLED + b"".join(entries)])

    def _cancel_queued(self, task: _Task) -> None:
        # Removal is lazy: dispatch skips cancelled tasks when it meets them.
        task.cancelled = True
        self._queued[task.pool] -= 1
        self._tasks.pop(task.id, None)
        self._by_client.pop((task.client, task.client_task_id), None)
        if task.flags & p.SPILLED:
            self._delete_spill(task.payload)

    def _on_bye(self, client: bytes) -> None:
        for task in [t for t in self._tasks.values() if t.client == client]:
            if task.worker is None and not task.cancelled:
                self._cancel_queued(task)

    # -- dispatch ----------------------------------------------------------

    async def _dispatch(self) -> None:
        """Hand queued tasks to workers with free slots, one message per worker."""
        assert self._workers_socket is not None
        if self._pending_failures:
            await self._send_failures()
        for pool, queue in self._queues.items():
            if not self._queued.get(pool):
                continue
            free = [w for w in self._workers.values() if w.pool == pool and w.free > 0]
            batches: dict[bytes, list[bytes]] = {}
            while free and queue:
                # Round-robin one task at a time keeps the workers evenly loaded.
                for worker in list(free):
                    task = self._next_task(queue)
                    if task is None:
                        break
                    task.worker = worker
                    worker.running[task.id] = task
                    out = batches.setdefault(worker.identity, [worker.identity, p.TASKS])
                    out.append(p.TASK_HEADER.pack(task.id, task.timeout_s, task.flags))
                    out.append(task.payload)
                    if worker.free == 0:
                        free.remove(worker)
                else:
                    continue
                break
            for message in batches.values():
                self._queued[pool] -= (len(message) - 2) // 2
                await self._workers_socket.send_multipart(message, copy=False)

    @staticmethod
    def _next_task(queue: deque[_Task]) -> _Task | None:
        while queue:
            task = queue.popleft()
            if not task.cancelled:
                return task
        return None

    # -- spill files -------------------------------------------------------

    def _delete_spill(self, frame: Any) -> None:
        if self._spill_root is None:
            return
        path = os.path.normpath(os.fsdecode(bytes(frame)))
        # Only ever delete inside our own spill directory: the path came off the wire.
        if os.path.dirname(path) == self._spill_root:
            self._pending_deletes.append(path)
            if len(self._pending_deletes) == 1:
                asyncio.get_running_loop().call_soon(self._flush_deletes)

    def _flush_deletes(self) -> None:
        paths, self._pending_deletes = self._pending_deletes, []
        self._delete_tasks.add(task := asyncio.ensure_future(asyncio.to_thread(_unlink, paths)))
        task.add_done_callback(self._delete_tasks.discard)

    def _drop_spilled_results(self, frames: list[bytes]) -> None:
        for i in range(0, len(frames) - 1, 2):
            _, _, flags = p.RESULT_HEADER.unpack(frames[i])
            if flags & p.SPILLED:
                self._delete_spill(frames[i + 1])


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _serve_until_signalled(broker: Broker) -> None:
    workers, clients = await broker.start()
    print(json.dumps({"worker_address": workers, "client_address": clients}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a broker alone (benchmarks, debugging); prints its addresses as JSON."""
    parser = argparse.ArgumentParser(prog="python -m aifactory.functions.broker")
    parser.add_argument("--worker-address", default="tcp://127.0.0.1:0")
    parser.add_argument("--client-address", default="tcp://127.0.0.1:0")
    parser.add_argument("--spill-dir", type=Path, default=None)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--max-retries", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    broker = Broker(
        args.worker_address,
        args.client_address,
        spill_dir=args.spill_dir,
        heartbeat_s=args.heartbeat_s,
        max_retries=args.max_retries,
    )
    asyncio.run(_serve_until_signalled(broker))
    return 0


if __name__ == "__main__":
    sys.exit(main())
