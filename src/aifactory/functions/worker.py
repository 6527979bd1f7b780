"""The worker manager: runs in an allocation, connects out to the broker.

``python -m aifactory.functions.worker --broker tcp://HOST:PORT --pool NAME
--processes N`` registers with the broker over a DEALER socket and runs
tasks in N child processes, each fed over its own pipe. One thread polls the
socket, the pipes and a signal wake-up fd together, so no task costs a thread::

    broker --TASKS--> manager --pipe--> child 1..N
    broker <-RESULTS- manager <-pipe--- child 1..N   (results batched per poll)

A task that runs past its timeout has its child killed and replaced; the
result is a timeout. A child that dies mid-task is replaced and the task is
reported crashed, so the broker retries it. SIGTERM stops taking work: the
manager tells the broker which tasks never started, kills its children (their
running tasks are retried by the broker) and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from collections import deque
from multiprocessing import resource_tracker
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path

import zmq

from aifactory.engines import die_with_parent
from aifactory.functions import protocol as p
from aifactory.functions._child import child_main
from aifactory.functions.curve import pin_server
from aifactory.launcher import consume

__all__ = ["WorkerManager", "main"]

logger = logging.getLogger(__name__)

_REJOIN_S = 30.0  # how long a refused worker keeps asking to rejoin
_Queued = tuple[int, float, bytes]  # task id, timeout_s, task header + payload for the child


class _Child:
    """One task process and the manager's end of its pipe."""

    def __init__(
        self, context: SpawnContext, index: int, spill_dir: str | None, threshold: int
    ) -> None:
        self.conn, child_end = context.Pipe(duplex=True)
        self.process: SpawnProcess = context.Process(
            target=child_main,
            args=(child_end, spill_dir, threshold),
            name=f"functions-task-{index}",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.index = index
        self.ready = False
        self.task_id: int | None = None
        self.timeout_s = 0.0
        self.deadline = float("inf")

    def send(self, task: _Queued) -> None:
        task_id, timeout_s, message = task
        self.task_id = task_id
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s if timeout_s > 0 else float("inf")
        self.conn.send_bytes(message)

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class WorkerManager:
    """Connects to a broker and runs its tasks in child processes.

    Args:
        broker: The broker's worker address, ``tcp://HOST:PORT``.
        pool: The pool this worker serves.
        processes: Task processes to run.
        prefetch: Extra tasks to hold beyond ``processes``, hiding the round
            trip to the broker between tasks.
        spill_dir: Spill directory as mounted here; default: the broker's. One
            this machine cannot use (a Pod has its own filesystem) means no
            spilling: large arguments and results then travel in messages.
        replica: The control plane's replica (allocation) this worker runs in.
        token: The replica's one-time token the broker checks, when it has a gate.
        server_key: The broker's Curve public key (Z85), pinned; "" talks in
            clear, to a broker started ``--plain``.
    """

    def __init__(
        self,
        broker: str,
        pool: str = "default",
        processes: int = 1,
        prefetch: int = 0,
        spill_dir: Path | None = None,
        replica: str = "",
        token: str = "",
        server_key: str = "",
    ) -> None:
        self.broker = broker
        self._server_key = server_key
        self.pool = pool
        self.replica = replica
        self._token = token
        self.processes = max(1, processes)
        self.prefetch = max(0, prefetch)
        self.spills = spill_dir is None or os.access(spill_dir, os.R_OK | os.W_OK | os.X_OK)
        self.spill_dir = spill_dir if self.spills else None
        if not self.spills:
            logger.info("no spill directory %s here: large payloads travel inline", spill_dir)
        self.identity = uuid.uuid4().bytes
        self._spill_threshold = p.DEFAULT_SPILL_THRESHOLD
        self._heartbeat_s = 1.0
        self._stopping = False
        self._refused_since: float | None = None  # refused while rejoining a (new) broker
        self._mp = multiprocessing.get_context("spawn")
        self._children: dict[int, _Child] = {}  # by pipe fd
        self._local: deque[_Queued] = deque()
        self._outbox: list[bytes | memoryview] = []
        self._poller = zmq.Poller()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)

    def stop(self) -> None:
        """Ask the loop to stop; safe from a signal handler."""
        self._stopping = True

    def run(self) -> int:
        """Serve until stopped; returns the exit code."""
        sock = self._socket
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 2000)
        if self._server_key:
            pin_server(sock, self._server_key)
        sock.connect(self.broker)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            registered = self._register()
            if registered is not True:
                return 0 if registered is False else 3
            self._poller.register(sock, zmq.POLLIN)
            self._poller.register(wake_r, zmq.POLLIN)
            _start_resource_tracker()
            for index in range(self.processes):
                self._start_child(index)
            self._serve(wake_r)
            self._goodbye()
            return 0
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for child in self._children.values():
                child.kill()
            sock.close()
            self._context.term()
            os.close(wake_r)
            os.close(wake_w)

    def _register(self) -> bool | str:
        """True once welcomed, False if stopped first, the broker's reason if refused."""
        body = self._register_body()
        while not self._stopping:
            self._socket.send(p.encode_json(p.REGISTER, body))
            if self._socket.poll(int(self._heartbeat_s * 1000)):
                frames = self._socket.recv_multipart()
                if frames[0][:1] == p.WELCOME:
                    welcome = p.decode_json(frames[0])
                    self._heartbeat_s = float(welcome.get("heartbeat_s") or 1.0)
                    self._spill_threshold = int(welcome["spill_threshold"])
                    if self.spills and self.spill_dir is None and welcome.get("spill_dir"):
                        self.spill_dir = Path(welcome["spill_dir"])
                    logger.info("registered with %s for pool %s", self.broker, self.pool)
                    return True
                if frames[0][:1] == p.REFUSED:
                    reason = str(p.decode_json(frames[0]).get("error"))
                    logger.error("the broker refused this worker: %s", reason)
                    return reason
        return False

    def _start_child(self, index: int) -> None:
        spill = str(self.spill_dir) if self.spill_dir else None
        child = _Child(self._mp, index, spill, self._spill_threshold)
        self._children[child.conn.fileno()] = child
        self._poller.register(child.conn.fileno(), zmq.POLLIN)

    def _replace_child(self, child: _Child) -> None:
        fd = child.conn.fileno()
        self._poller.unregister(fd)
        del self._children[fd]
        child.kill()
        self._start_child(child.index)

    def _serve(self, wake_r: int) -> None:
        next_heartbeat = time.monotonic() + self._heartbeat_s
        while not self._stopping:
            now = time.monotonic()
            deadline = min([next_heartbeat] + [c.deadline for c in self._children.values()])
            for item, _ in self._poller.poll(max(0, int((deadline - now) * 1000) + 1)):
                if item is self._socket:
                    self._drain_socket()
                elif item == wake_r:
                    os.read(wake_r, 512)
                else:
                    self._drain_child(self._children[item])
            self._kill_overdue()
            self._assign()
            if self._outbox:
                self._socket.send_multipart([p.RESULTS, *self._outbox])
                self._outbox = []
                next_heartbeat = time.monotonic() + self._heartbeat_s
            elif time.monotonic() >= next_heartbeat:
                self._socket.send(self._heartbeat_or_rejoin())
                next_heartbeat = time.monotonic() + self._heartbeat_s

    def _drain_socket(self) -> None:
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = frames[0][:1]
            if kind == p.TASKS:
                i, end = 1, len(frames)
                while i < end:
                    # An inline task is already the message its child needs.
                    frame = frames[i]
                    task_id, timeout_s, flags = p.TASK_HEADER.unpack_from(frame)
                    if not flags & p.INLINE:
                        frame += frames[i + 1]
                        i += 1
                    self._local.append((task_id, timeout_s, frame))
                    i += 1
            elif kind == p.RECONNECT:
                logger.warning("the broker forgot this worker; registering again")
                self._local.clear()
                self._socket.send(p.encode_json(p.REGISTER, self._register_body()))
            elif kind == p.REFUSED:
                logger.warning("the broker refused this worker: %s", p.decode_json(frames[0]))
                if self._refused_since is None:
                    self._refused_since = time.monotonic()
            elif kind == p.WELCOME:
                self._refused_since = None

    def _heartbeat_or_rejoin(self) -> bytes:
        """A heartbeat; after a refusal, another registration, for a while.

        A restarted control plane admits its adopted workers only once it has
        read them back from its store, which may be after they reconnected.
        """
        if self._refused_since is None:
            return p.HEARTBEAT
        if time.monotonic() - self._refused_since > _REJOIN_S:
            logger.error("the broker kept refusing this worker for %g s; stopping", _REJOIN_S)
            self._stopping = True
        return p.encode_json(p.REGISTER, self._register_body())

    def _register_body(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "capacity": self.processes + self.prefetch,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "replica": self.replica,
            "token": self._token,
            "spills": self.spills,
        }

    def _drain_child(self, child: _Child) -> None:
        try:
            while child.conn.poll():
                data = child.conn.recv_bytes()
                if data and data[p.RESULT_HEADER.size - 1] & p.INLINE:
                    self._outbox.append(data)  # the child's message is the result frame
                elif data:
                    view = memoryview(data)
                    self._outbox += [view[: p.RESULT_HEADER.size], view[p.RESULT_HEADER.size :]]
                child.ready = True
                child.task_id = None
                child.deadline = float("inf")
        except (EOFError, OSError):
            if child.task_id is not None:
                logger.warning("task process %d died running task %d", child.index, child.task_id)
                self._report(child.task_id, p.STATUS_CRASHED)
            self._replace_child(child)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for child in list(self._children.values()):
            if child.deadline <= now and child.task_id is not None:
                logger.warning(
                    "task %d ran past %g s; restarting its process", child.task_id, child.timeout_s
                )
                self._report(child.task_id, p.STATUS_TIMEOUT)
                self._replace_child(child)

    def _report(self, task_id: int, status: int) -> None:
        self._outbox.append(p.RESULT_HEADER.pack(task_id, status, p.INLINE))

    def _assign(self) -> None:
        if not self._local:
            return
        for child in self._children.values():
            if child.ready and child.task_id is None and self._local:
                child.send(self._local.popleft())

    def _goodbye(self) -> None:
        unstarted = [task[0] for task in self._local]
        self._socket.send(p.pack_ids(p.GOODBYE, unstarted))
        logger.info("stopping; %d unstarted tasks handed back", len(unstarted))


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, keeping this process's signal mask.

    A lent worker starts with SIGTERM blocked (its launcher's shield: Slurm
    signals every process of a preempted job, and running tasks must finish
    within the grace time). Starting the tracker unblocks SIGINT and SIGTERM
    (CPython's ``resource_tracker.ensure_running``); started first and the
    mask put back, the task processes spawned next inherit the shield too.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m aifactory.functions.worker")
    parser.add_argument("--broker", required=True, help="broker worker address tcp://HOST:PORT")
    parser.add_argument(
        "--broker-key", default="", help="the broker's Curve public key (Z85), pinned"
    )
    parser.add_argument("--pool", default="default", help="pool to serve")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prefetch", type=int, default=0, help="extra tasks held locally")
    parser.add_argument("--spill-dir", type=Path, default=None)
    parser.add_argument("--replica-id", default="", help="the allocation's replica id")
    parser.add_argument(
        "--token-file", type=Path, default=None, help="file with the replica's token (deleted)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    token = ""
    if args.token_file is not None:
        token = consume(args.token_file).strip()
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # A launcher (pilot job) that dies takes its workers with it; SIGTERM is clean.
    die_with_parent(signal.SIGTERM)
    manager = WorkerManager(
        args.broker,
        args.pool,
        args.processes,
        args.prefetch,
        args.spill_dir,
        replica=args.replica_id,
        token=token,
        server_key=args.broker_key,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: manager.stop())
    return manager.run()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
