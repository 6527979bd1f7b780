"""Serverless functions end to end: a real broker, real worker processes, real sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]
import pytest
import zmq

from aifactory.functions import (
    Broker,
    BrokerStats,
    BrokerUnavailable,
    Executor,
    RemoteError,
    RemoteTraceback,
    TaskLost,
    TaskTimeout,
    as_completed,
)
from aifactory.functions import protocol as p

from .waiting import wait_until

# Workers cannot import this test module, so ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEARTBEAT_S = 0.2
MAX_RETRIES = 2


@dataclass
class Cluster:
    broker: Broker
    worker_address: str
    client_address: str
    spill_dir: Path
    log_dir: Path
    loop: asyncio.AbstractEventLoop
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, pool: str = "default", processes: int = 2) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aifactory.functions.worker",
                "--broker",
                self.worker_address,
                "--pool",
                pool,
                "--processes",
                str(processes),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(process)
        return process

    def stats(self) -> BrokerStats:
        async def read() -> BrokerStats:
            return self.broker.stats()

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(5)

    def wait_for(self, check: Callable[[BrokerStats], bool], timeout_s: float = 20) -> BrokerStats:
        return wait_until(
            self.stats, check, timeout_s=timeout_s, what="the broker's state", interval_s=0.05
        )

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.iterdir()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    spill_dir = tmp_path_factory.mktemp("spill")
    log_dir = tmp_path_factory.mktemp("logs")
    started: concurrent.futures.Future[tuple[Cluster, asyncio.Event]] = concurrent.futures.Future()

    async def serve() -> None:
        broker = Broker(
            spill_dir=spill_dir,
            heartbeat_s=HEARTBEAT_S,
            heartbeat_misses=3,
            max_retries=MAX_RETRIES,
        )
        workers, clients = await broker.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started.set_result((Cluster(broker, workers, clients, spill_dir, log_dir, loop), stop))
        await stop.wait()
        await broker.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    cluster, stop = started.result(10)
    cluster.start_worker()
    cluster.start_worker()
    cluster.wait_for(lambda s: s.pools.get("default", {}).get("workers") == 2)
    yield cluster
    for process in cluster.workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = [process.wait(10) for process in cluster.workers]
    cluster.loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    assert not thread.is_alive()
    assert all(code in (0, -signal.SIGKILL) for code in codes), cluster.logs()


def square(x: int) -> int:
    return x * x


def fail(x: int) -> int:
    raise ValueError(f"bad input {x}")  # the line the remote traceback must show


def sleep_and_mark(marker_dir: Path, seconds: float) -> int:
    manager_pid = os.getppid()
    (marker_dir / str(manager_pid)).touch()
    time.sleep(seconds)
    return manager_pid


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def grow(data: bytes) -> bytes:
    return data + b"!"


def test_map_returns_results_in_order(cluster: Cluster) -> None:
    with Executor(cluster.client_address) as executor:
        assert list(executor.map(square, range(1000))) == [x * x for x in range(1000)]
        assert list(executor.map(square, range(1000), chunksize=64)) == [x * x for x in range(1000)]
        futures = [executor.submit(square, x) for x in range(50)]
        assert sorted(f.result() for f in as_completed(futures, timeout=30)) == [
            x * x for x in range(50)
        ]


def test_remote_exception_carries_the_remote_traceback(cluster: Cluster) -> None:
    with Executor(cluster.client_address) as executor:
        future = executor.submit(fail, 7)
        with pytest.raises(ValueError, match="bad input 7") as info:
            future.result(30)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "the line the remote traceback must show" in str(cause)
    assert "in fail" in str(cause)
    shown = "".join(traceback.format_exception(info.value))
    assert "the line the remote traceback must show" in shown


def test_killed_worker_task_is_retried_on_another(cluster: Cluster, tmp_path: Path) -> None:
    pair = [cluster.start_worker(pool="crash", processes=1) for _ in range(2)]
    cluster.wait_for(lambda s: s.pools.get("crash", {}).get("workers") == 2)
    with Executor(cluster.client_address, pool="crash") as executor:
        future = executor.submit(sleep_and_mark, tmp_path, 1.5)
        deadline = time.monotonic() + 20
        while not list(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        (marker,) = list(tmp_path.iterdir())
        victim = int(marker.name)
        (killed,) = [p for p in pair if p.pid == victim]
        os.kill(victim, signal.SIGKILL)
        survivor = future.result(30)
    assert survivor != victim
    assert survivor in {p.pid for p in pair}
    assert killed.wait(5) == -signal.SIGKILL


def test_task_lost_too_often_fails_clearly(cluster: Cluster) -> None:
    with Executor(cluster.client_address) as executor:
        future = executor.submit(crash)
        with pytest.raises(TaskLost, match=f"worker lost {MAX_RETRIES + 1} times"):
            future.result(60)
        assert executor.submit(square, 4).result(30) == 16


def test_task_past_its_timeout_fails_and_the_worker_recovers(cluster: Cluster) -> None:
    with Executor(cluster.client_address, timeout_s=0.5) as executor:
        started = time.monotonic()
        future = executor.submit(time.sleep, 10)
        with pytest.raises(TimeoutError) as info:
            future.result(30)
        assert isinstance(info.value, TaskTimeout)
        assert time.monotonic() - started < 8
        assert [executor.submit(square, x).result(30) for x in range(6)] == [
            x * x for x in range(6)
        ]


def test_cancel_succeeds_only_while_queued(cluster: Cluster) -> None:
    with Executor(cluster.client_address) as executor:
        busy = [executor.submit(time.sleep, 1.5) for _ in range(4)]
        cluster.wait_for(lambda s: s.pools["default"]["running"] == 4)
        queued = executor.submit(square, 3)
        cluster.wait_for(lambda s: s.pools["default"]["queued"] == 1)
        assert queued.cancel()
        assert queued.cancelled()
        assert not busy[0].cancel()
        assert [f.result(30) for f in busy] == [None] * 4
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result()
    with Executor(cluster.client_address, pool="nobody-serves-this") as idle:
        futures = [idle.submit(square, x) for x in range(3)]
        idle.shutdown(cancel_futures=True)
        assert all(f.cancelled() for f in futures)


def test_large_argument_and_result_travel_through_spill_files(cluster: Cluster) -> None:
    data = os.urandom(5 * 1024 * 1024)
    with Executor(cluster.client_address) as executor:
        result = executor.submit(grow, data).result(30)
    assert result == data + b"!"
    deadline = time.monotonic() + 5
    while list(cluster.spill_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(cluster.spill_dir.iterdir()) == []


def test_unreachable_broker_fails_fast() -> None:
    with pytest.raises(BrokerUnavailable, match="no functions broker answered"):
        Executor("tcp://127.0.0.1:9", connect_timeout_s=0.3)


def test_a_text_executor_never_unpickles_nor_opens_what_a_worker_sends(tmp_path: Path) -> None:
    """The control plane's named calls: a hostile worker's result is text or an error."""
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(_Touch(marker))
    precious = tmp_path / "precious.json"
    precious.write_text('{"ok": true, "result": "read from a path the worker named"}')

    def scenario(workers: str, clients: str) -> list[BaseException | None]:
        context = zmq.Context()
        worker = context.socket(zmq.DEALER)
        worker.connect(workers)
        worker.send(p.encode_json(p.REGISTER, {"pool": "default", "capacity": 3}))
        assert worker.poll(5000) and worker.recv()[:1] == p.WELCOME
        with Executor(clients, text_results=True) as executor:
            futures = [executor.submit(str, n) for n in range(3)]
            tasks: list[tuple[int, float, int, p.Payload]] = []
            while len(tasks) < 3:
                tasks += p.read_tasks(worker.recv_multipart(), 1)
            assert all(flags & p.TEXT_RESULT for _id, _t, flags, _payload in tasks)
            (ok, spilled, failed) = (task[0] for task in tasks)
            out: list[bytes | memoryview] = [p.RESULTS]
            p.add_result(out, ok, p.STATUS_OK, 0, bomb)
            p.add_result(out, spilled, p.STATUS_OK, p.SPILLED, os.fsencode(precious))
            p.add_result(out, failed, p.STATUS_ERROR, 0, bomb)
            worker.send_multipart(out)
            errors = [f.exception(10) for f in futures]
        worker.close(0)
        context.term()
        return errors

    async def run() -> list[BaseException | None]:
        broker = Broker(heartbeat_s=5.0)
        workers, clients = await broker.start()
        try:
            return await asyncio.to_thread(scenario, workers, clients)
        finally:
            await broker.stop()

    not_text, spilled, failed = asyncio.run(run())
    assert isinstance(not_text, UnicodeDecodeError)
    assert isinstance(spilled, TaskLost) and "spilled a text result" in str(spilled)
    assert isinstance(failed, RemoteError)
    assert precious.exists(), "a path a worker names is neither read nor deleted"
    assert not marker.exists(), "nothing a worker sent was unpickled"
    pickle.loads(bomb)
    assert marker.exists(), "sanity: unpickling the payload would have run it"


class _Touch:
    """Unpickling it creates a file: the proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


MALFORMED = [
    [p.HELLO + b"not json"],
    [p.HELLO + b"[" * 100_000],
    [p.HELLO + b'"a string, not an object"'],
    [p.CANCEL + b"\x01\x02\x03"],
    [p.SUBMIT + b"\xff\xfe", b"\x00" * 3],
    [p.SUBMIT + b"default", b"too short for a task header"],
]


def test_malformed_messages_are_dropped_and_the_broker_serves_on(cluster: Cluster) -> None:
    context = zmq.Context.instance()
    for address, messages in (
        (cluster.client_address, MALFORMED),
        (cluster.worker_address, [[p.REGISTER + b"{"], [p.REGISTER + b"[" * 100_000]]),
    ):
        sock = context.socket(zmq.DEALER)
        sock.connect(address)
        for frames in messages:
            sock.send_multipart(frames)
        sock.close(linger=1000)
    with Executor(cluster.client_address) as executor:
        assert list(executor.map(square, range(4), timeout=10)) == [0, 1, 4, 9]
