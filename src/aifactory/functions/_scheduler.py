"""The broker's bookkeeping: pool queues, workers' slots, retries, cancels.

No sockets here: every method takes decoded frames and returns (or queues)
the messages to send, so the broker's I/O loop stays small and this part can
be tested without ZeroMQ. Not thread-safe; the broker serializes calls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aifactory.functions import protocol as p

__all__ = ["BrokerStats", "PoolEvent", "Scheduler"]

logger = logging.getLogger("aifactory.functions.broker")

Message = list[Any]  # frames, the first one the ROUTER identity to send to


@dataclass(frozen=True)
class PoolEvent:
    """A change the control plane cares about: a worker joined or left, or work arrived.

    ``kind`` is ``joined``, ``left`` or ``demand`` (tasks queued where no worker serves).
    """

    kind: str
    pool: str
    replica: str = ""


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
    replicas: dict[str, dict[str, int]] = field(default_factory=dict)
    last_submit: dict[str, float] = field(default_factory=dict)


@dataclass(eq=False)
class _Task:
    id: int
    client: bytes
    client_task_id: int
    pool: str
    timeout_s: float
    flags: int
    payload: p.Payload  # passed through untouched
    attempts: int = 0
    worker: _Worker | None = None
    cancelled: bool = False
    dispatched_at: float = 0.0


@dataclass(eq=False)
class _Worker:
    identity: bytes
    pool: str
    capacity: int
    last_seen: float
    replica: str = ""
    spills: bool = True  # shares the spill directory (a Pod does not)
    draining: bool = False
    running: dict[int, _Task] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return 0 if self.draining else self.capacity - len(self.running)


class Scheduler:
    """Queues tasks per pool, hands them to workers' free slots, retries lost ones.

    Args:
        max_retries: Times a task is requeued after losing its worker.
        spill_root: The real path of the spill directory, or None.
    """

    def __init__(self, max_retries: int, spill_root: str | None) -> None:
        self.max_retries = max_retries
        self.workers: dict[bytes, _Worker] = {}
        self.outbox: list[Message] = []  # to clients: results, failures, cancel replies
        self.deletes: list[str] = []  # spill files no longer needed
        self.events: list[PoolEvent] = []  # for the control plane, drained by the broker
        self.last_submit: dict[str, float] = {}  # pool -> monotonic time of its last submit
        self.busy: dict[bytes, list[float]] = {}  # client -> [tasks done, seconds on workers]
        self._spill_root = spill_root
        self._queues: dict[str, deque[_Task]] = {}
        self._queued: dict[str, int] = {}
        self._tasks: dict[int, _Task] = {}
        self._by_client: dict[tuple[bytes, int], _Task] = {}
        self._next_id = 0
        self._done = 0
        self._failed = 0

    def stats(self) -> BrokerStats:
        """Current counters: workers, slots, queued, running, done and failed tasks."""
        workers = list(self.workers.values())
        pools: dict[str, dict[str, int]] = {}
        for name in set(self._queued) | {w.pool for w in workers}:
            members = [w for w in workers if w.pool == name]
            pools[name] = {
                "workers": len(members),
                "capacity": sum(w.capacity for w in members),
                "queued": self._queued.get(name, 0),
                "running": sum(len(w.running) for w in members),
            }
        replicas: dict[str, dict[str, int]] = {}
        for worker in workers:
            if worker.replica:
                entry = replicas.setdefault(worker.replica, {"capacity": 0, "running": 0})
                entry["capacity"] += worker.capacity
                entry["running"] += len(worker.running)
        return BrokerStats(
            workers=len(workers),
            capacity=sum(w.capacity for w in workers),
            queued=sum(self._queued.values()),
            running=sum(len(w.running) for w in workers),
            done=self._done,
            failed=self._failed,
            pools=pools,
            replicas=replicas,
            last_submit=dict(self.last_submit),
        )

    # -- workers -----------------------------------------------------------

    def register(self, identity: bytes, body: dict[str, Any]) -> None:
        """A worker joined (or joined again: its old tasks are retried)."""
        old = self.workers.pop(identity, None)
        if old is not None:
            self.lose_worker(old, "registered again")
        worker = _Worker(
            identity=identity,
            pool=str(body.get("pool", "default")),
            capacity=max(1, int(body.get("capacity", 1))),
            last_seen=time.monotonic(),
            replica=str(body.get("replica") or ""),
            spills=bool(body.get("spills", True)),
        )
        self.workers[identity] = worker
        self.events.append(PoolEvent("joined", worker.pool, worker.replica))
        logger.info(
            "functions worker %s joined pool %s with %d slots (host %s, pid %s)",
            identity.hex()[:8],
            worker.pool,
            worker.capacity,
            body.get("host"),
            body.get("pid"),
        )

    def results(self, worker: _Worker, frames: Sequence[Any]) -> None:
        """Route a worker's results to their clients, one message per client."""
        replies: dict[bytes, Message] = {}
        now = time.monotonic()
        # All read before any is routed: a malformed message changes nothing.
        for task_id, status, flags, payload in list(p.read_results(frames, 0)):
            task = worker.running.pop(task_id, None)
            if task is None:  # requeued after a loss, now answered twice
                if flags & p.SPILLED:
                    self.delete_spill(payload)
                continue
            if status == p.STATUS_CRASHED:
                self._retry(task, "the process running it died")
                continue
            self._finish(task, failed=status != p.STATUS_OK)
            busy = self.busy.get(task.client)
            if busy is None:
                busy = self.busy[task.client] = [0.0, 0.0]
            busy[0] += 1
            busy[1] += now - task.dispatched_at
            out = replies.get(task.client)
            if out is None:
                out = replies[task.client] = [task.client, p.RESULTS]
            p.add_result(out, task.client_task_id, status, flags, payload)
        self.outbox += replies.values()

    def drop_results(self, frames: Sequence[Any]) -> None:
        """Results from a worker we no longer know: only their spill files matter."""
        for _, _, flags, payload in p.read_results(frames, 0):
            if flags & p.SPILLED:
                self.delete_spill(payload)

    def lose_worker(self, worker: _Worker, why: str, unstarted: set[int] | None = None) -> None:
        """Forget a worker; its tasks go back to the queue (``unstarted`` at no cost)."""
        self.workers.pop(worker.identity, None)
        self.events.append(PoolEvent("left", worker.pool, worker.replica))
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

    def _finish(self, task: _Task, *, failed: bool) -> None:
        self._tasks.pop(task.id, None)
        self._by_client.pop((task.client, task.client_task_id), None)
        if failed:
            self._failed += 1
        else:
            self._done += 1
        if task.flags & p.SPILLED:
            self.delete_spill(task.payload)

    def _retry(self, task: _Task, why: str) -> None:
        task.attempts += 1
        if task.attempts > self.max_retries:
            self._finish(task, failed=True)
            reason = f"worker lost {task.attempts} times (last: {why})"
            logger.warning("functions task %d failed: %s", task.id, reason)
            header = p.RESULT_HEADER.pack(task.client_task_id, p.STATUS_LOST, p.INLINE)
            self.outbox.append([task.client, p.RESULTS, header + reason.encode()])
            return
        self._requeue(task)

    def _requeue(self, task: _Task) -> None:
        task.worker = None
        self._queues.setdefault(task.pool, deque()).appendleft(task)
        self._queued[task.pool] = self._queued.get(task.pool, 0) + 1

    # -- clients -----------------------------------------------------------

    def submit(self, client: bytes, pool: str, frames: Sequence[Any]) -> None:
        """Queue a client's batch of tasks at the back of its pool's queue."""
        tasks = list(p.read_tasks(frames, 0))  # all read before any is queued
        queue = self._queues.setdefault(pool, deque())
        count = 0
        for client_task_id, timeout_s, flags, payload in tasks:
            self._next_id += 1
            task = _Task(self._next_id, client, client_task_id, pool, timeout_s, flags, payload)
            self._tasks[task.id] = task
            self._by_client[(client, client_task_id)] = task
            queue.append(task)
            count += 1
        self._queued[pool] = self._queued.get(pool, 0) + count
        self.last_submit[pool] = time.monotonic()
        if not any(w.pool == pool and not w.draining for w in self.workers.values()):
            self.events.append(PoolEvent("demand", pool))

    def drain(self, replica: str) -> None:
        """Give ``replica``'s workers no new tasks; their running ones finish."""
        for worker in self.workers.values():
            if worker.replica == replica:
                worker.draining = True

    def cancel(self, client: bytes, ids: Sequence[int]) -> None:
        """Cancel the client's tasks still queued; the reply says which ones."""
        entries = []
        for client_task_id in ids:
            task = self._by_client.get((client, client_task_id))
            removed = task is not None and task.worker is None and not task.cancelled
            if task is not None and removed:
                self._cancel_queued(task)
            entries.append(p.CANCEL_ENTRY.pack(client_task_id, int(removed)))
        self.outbox.append([client, p.CANCELLED + b"".join(entries)])

    def bye(self, client: bytes) -> None:
        """The client left: drop its queued tasks."""
        for task in [t for t in self._tasks.values() if t.client == client]:
            if task.worker is None and not task.cancelled:
                self._cancel_queued(task)

    def _cancel_queued(self, task: _Task) -> None:
        # Removal is lazy: dispatch skips cancelled tasks when it meets them.
        task.cancelled = True
        self._queued[task.pool] -= 1
        self._tasks.pop(task.id, None)
        self._by_client.pop((task.client, task.client_task_id), None)
        if task.flags & p.SPILLED:
            self.delete_spill(task.payload)

    # -- dispatch ----------------------------------------------------------

    def dispatch(self) -> list[Message]:
        """Hand queued tasks to workers with free slots, one message per worker."""
        messages: list[Message] = []
        now = time.monotonic()
        for pool, queue in self._queues.items():
            if not self._queued.get(pool):
                continue
            free = [w for w in self.workers.values() if w.pool == pool and w.free > 0]
            batches: dict[bytes, Message] = {}
            while free and queue:
                # Round-robin one task at a time keeps the workers evenly loaded.
                for worker in list(free):
                    task = self._next_task(queue)
                    if task is None:
                        break
                    task.worker = worker
                    task.dispatched_at = now
                    worker.running[task.id] = task
                    self._queued[pool] -= 1
                    out = batches.get(worker.identity)
                    if out is None:
                        out = batches[worker.identity] = [worker.identity, p.TASKS]
                    flags, payload = task.flags, task.payload
                    if flags & p.SPILLED and not worker.spills:
                        flags, payload = self._unspilled(payload)
                    p.add_task(out, task.id, task.timeout_s, flags, payload)
                    if worker.free == 0:
                        free.remove(worker)
                else:
                    continue
                break
            messages += batches.values()
        return messages

    @staticmethod
    def _next_task(queue: deque[_Task]) -> _Task | None:
        while queue:
            task = queue.popleft()
            if not task.cancelled:
                return task
        return None

    def _unspilled(self, frame: p.Payload) -> tuple[int, p.Payload]:
        """A spilled argument read back, for a worker that cannot see the spill directory.

        The file stays (a retry reads it again); only files inside our own
        spill directory are read, since the path came off the wire.
        """
        path = self._own_spill_file(frame)
        if path is not None:
            with contextlib.suppress(OSError), open(path, "rb") as file:
                return 0, file.read()
        return p.SPILLED, frame  # the worker reports the unreadable file as the task's error

    def _own_spill_file(self, frame: p.Payload) -> str | None:
        if self._spill_root is None:
            return None
        path = os.path.normpath(os.fsdecode(bytes(frame)))
        return path if os.path.dirname(path) == self._spill_root else None

    def delete_spill(self, frame: p.Payload) -> None:
        """Queue a spill file for deletion, if it lies in our spill directory."""
        # Only ever delete inside our own spill directory: the path came off the wire.
        path = self._own_spill_file(frame)
        if path is not None:
            self.deletes.append(path)
