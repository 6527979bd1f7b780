"""The functions broker over real ZeroMQ sockets, with executors and workers played by the test.

Each side speaks the wire protocol with a plain DEALER socket; every receive
has a timeout, so a message that never comes fails the test instead of
hanging it. What the broker tells its gate arrives on a queue.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import zmq

from aifactory.functions import protocol as p
from aifactory.functions.broker import Broker, PoolEvent

TIMEOUT_MS = 5000
_identities = itertools.count()


def dealer(context: zmq.Context[zmq.Socket[bytes]], address: str) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"peer-%d" % next(_identities))
    sock.connect(address)
    return sock


class Worker:
    """One worker manager of a pool, as the broker sees it."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], broker: Broker, **registration: Any
    ) -> None:
        self.sock = dealer(context, broker.worker_address)
        body = {"pool": "cpu", "capacity": 2, "replica": "cpu-1"} | registration
        self.sock.send_multipart([p.encode_json(p.REGISTER, body)])
        self.reply = self.receive()

    def receive(self) -> list[bytes]:
        """The next message that is not a heartbeat."""
        while True:
            frames = self.sock.recv_multipart()
            if frames[0] != p.HEARTBEAT:
                return frames

    def tasks(self, count: int) -> list[tuple[int, bytes]]:
        """The next ``count`` tasks handed to this worker: broker task id and payload."""
        got: list[tuple[int, bytes]] = []
        while len(got) < count:
            frames = self.receive()
            assert frames[0] == p.TASKS, frames[0]
            got += [(task_id, bytes(payload)) for task_id, _, _, payload in p.read_tasks(frames, 1)]
        assert len(got) == count, f"more tasks than asked for: {got}"
        return got

    def answer(self, *results: tuple[int, bytes]) -> None:
        out: list[Any] = [p.RESULTS]
        for task_id, payload in results:
            p.add_result(out, task_id, p.STATUS_OK, 0, payload)
        self.sock.send_multipart(out)


class Executor:
    """A client submitting tasks (its own task ids) and reading results."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], broker: Broker) -> None:
        self.sock = dealer(context, broker.client_address)

    def hello(self, pool: str = "cpu", api_key: str = "good") -> list[bytes]:
        self.sock.send_multipart([p.encode_json(p.HELLO, {"pool": pool, "api_key": api_key})])
        return self.sock.recv_multipart()

    def submit(self, *tasks: tuple[int, bytes], pool: str = "cpu") -> None:
        out: list[Any] = [p.SUBMIT + pool.encode()]
        for task_id, payload in tasks:
            p.add_task(out, task_id, 0.0, 0, payload)
        self.sock.send_multipart(out)

    def results(self, count: int) -> dict[int, tuple[int, bytes]]:
        """The next ``count`` results: own task id -> (status, payload)."""
        got: dict[int, tuple[int, bytes]] = {}
        while len(got) < count:
            frames = self.sock.recv_multipart()
            assert frames[0] == p.RESULTS, frames[0]
            for task_id, status, _, payload in p.read_results(frames, 1):
                got[task_id] = (status, bytes(payload))
        return got


@dataclass
class Gate:
    """Admits the key ``good`` and the token ``secret``; what it hears goes on queues."""

    events: queue.Queue[PoolEvent] = field(default_factory=queue.Queue)
    charges: queue.Queue[tuple[str, str, int, float]] = field(default_factory=queue.Queue)

    def admit_client(self, hello: dict[str, Any]) -> str | None:
        return None if hello.get("api_key") == "good" else "unknown API key"

    def admit_worker(self, registration: dict[str, Any]) -> str | None:
        return None if registration.get("token") == "secret" else "not this replica's token"

    def notify(self, events: list[PoolEvent]) -> None:
        for event in events:
            self.events.put(event)

    def charge(self, usage: list[tuple[str, str, int, float]]) -> None:
        for entry in usage:
            self.charges.put(entry)

    def next_event(self, kind: str) -> PoolEvent:
        while True:
            event = self.events.get(timeout=TIMEOUT_MS / 1000)
            if event.kind == kind:
                return event


@contextmanager
def sockets() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


def run(scenario: Callable[[Broker, zmq.Context[zmq.Socket[bytes]]], None], **options: Any) -> None:
    async def main() -> None:
        broker = Broker(**options)
        await broker.start()
        try:
            with sockets() as context:
                scenario(broker, context)
        finally:
            await broker.stop()

    asyncio.run(main())


def test_results_go_back_to_the_executor_that_submitted_under_its_own_task_ids() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        worker = Worker(context, broker, capacity=4)
        assert worker.reply[0][:1] == p.WELCOME
        other_pool = Worker(context, broker, pool="gpu", replica="gpu-1")
        first, second = Executor(context, broker), Executor(context, broker)
        first.submit((1, b"a1"), (2, b"a2"))
        second.submit((1, b"b1"))  # the same id as the first executor's: the broker renumbers
        tasks = worker.tasks(3)
        assert len({task_id for task_id, _ in tasks}) == 3
        worker.answer(*((task_id, b"done " + payload) for task_id, payload in tasks))
        assert first.results(2) == {1: (p.STATUS_OK, b"done a1"), 2: (p.STATUS_OK, b"done a2")}
        assert second.results(1) == {1: (p.STATUS_OK, b"done b1")}
        stats = broker.stats()
        assert (stats.done, stats.failed, stats.queued, stats.running) == (3, 0, 0, 0)
        assert stats.pools["gpu"]["running"] == 0, "no task went to another pool's worker"
        assert other_pool.reply[0][:1] == p.WELCOME

    run(scenario)


def test_a_worker_is_never_given_more_than_its_slots_and_work_goes_in_order() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        worker = Worker(context, broker, capacity=1)
        executor = Executor(context, broker)
        executor.submit(*((n, b"t%d" % n) for n in range(1, 4)))
        for n in range(1, 4):
            ((task_id, payload),) = worker.tasks(1)
            assert payload == b"t%d" % n
            stats = broker.stats()
            assert (stats.running, stats.queued) == (1, 3 - n)
            worker.answer((task_id, payload))
            assert executor.results(1) == {n: (p.STATUS_OK, payload)}

    run(scenario)


def test_a_lost_workers_task_is_retried_elsewhere_then_fails_past_max_retries() -> None:
    gate = Gate()

    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        executor = Executor(context, broker)
        assert executor.hello()[0][:1] == p.WELCOME
        first = Worker(context, broker, token="secret", replica="cpu-1")
        executor.submit((7, b"work"))
        ((_, payload),) = first.tasks(1)
        assert payload == b"work"
        # The worker goes silent with the task.
        assert gate.next_event("left").replica == "cpu-1"
        second = Worker(context, broker, token="secret", replica="cpu-2")
        ((_, payload),) = second.tasks(1)
        assert payload == b"work", "retried on the next worker"
        assert gate.next_event("left").replica == "cpu-2"
        ((status, reason),) = executor.results(1).values()
        assert status == p.STATUS_LOST
        assert reason == b"worker lost 2 times (last: worker missed 4 heartbeats)"

    run(scenario, heartbeat_s=0.05, heartbeat_misses=4, max_retries=1, gate=gate)


def test_a_goodbye_hands_back_unstarted_tasks_free_and_fails_started_ones() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        leaving = Worker(context, broker)
        executor = Executor(context, broker)
        executor.submit((1, b"started"), (2, b"not started"))
        by_payload = {payload: task_id for task_id, payload in leaving.tasks(2)}
        leaving.sock.send_multipart([p.pack_ids(p.GOODBYE, [by_payload[b"not started"]])])
        ((status, reason),) = executor.results(1).values()
        assert status == p.STATUS_LOST and b"said goodbye" in reason
        staying = Worker(context, broker, replica="cpu-2")
        ((task_id, payload),) = staying.tasks(1)
        assert payload == b"not started", "handed back without using up a retry"
        staying.answer((task_id, b"ok"))
        assert executor.results(1) == {2: (p.STATUS_OK, b"ok")}

    run(scenario, max_retries=0)


def test_the_gate_decides_who_may_connect_and_where_to() -> None:
    gate = Gate()

    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        rude = Executor(context, broker)
        rude.submit((1, b"x"))
        refusal = rude.sock.recv_multipart()
        assert refusal[0][:1] == p.REFUSED
        assert p.decode_json(refusal[0]) == {"error": "say hello with a valid API key first"}
        assert p.decode_json(Executor(context, broker).hello(api_key="bad")[0]) == {
            "error": "unknown API key"
        }
        impostor = Worker(context, broker, token="guess")
        assert p.decode_json(impostor.reply[0]) == {"error": "not this replica's token"}

        executor = Executor(context, broker)
        assert executor.hello(pool="cpu")[0][:1] == p.WELCOME
        executor.submit((1, b"x"), pool="gpu")
        answer = executor.sock.recv_multipart()
        assert p.decode_json(answer[0]) == {
            "error": "this executor was admitted to pool 'cpu' only"
        }
        executor.submit((1, b"x"))
        assert gate.next_event("demand") == PoolEvent("demand", "cpu"), "no worker: scale up"
        worker = Worker(context, broker, token="secret", replica="cpu-1")
        assert gate.next_event("joined") == PoolEvent("joined", "cpu", "cpu-1")
        ((task_id, _),) = worker.tasks(1)
        worker.answer((task_id, b"y"))
        assert executor.results(1) == {1: (p.STATUS_OK, b"y")}
        api_key, pool, tasks, seconds = gate.charges.get(timeout=TIMEOUT_MS / 1000)
        assert (api_key, pool, tasks) == ("good", "cpu", 1) and seconds >= 0

    # Heartbeats pace the charges: a short one brings the charge soon.
    run(scenario, heartbeat_s=0.05, heartbeat_misses=100, gate=gate)


def test_a_cancel_removes_queued_tasks_and_leaves_running_ones() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        worker = Worker(context, broker, capacity=1)
        executor = Executor(context, broker)
        executor.submit((1, b"running"), (2, b"queued"))
        ((task_id, _),) = worker.tasks(1)
        executor.sock.send_multipart([p.pack_ids(p.CANCEL, [1, 2, 3])])
        reply = executor.sock.recv_multipart()
        assert reply[0][:1] == p.CANCELLED
        entries = [p.CANCEL_ENTRY.unpack_from(reply[0], 1 + n * 9) for n in range(3)]
        assert entries == [(1, 0), (2, 1), (3, 0)], "only the queued one was removed"
        worker.answer((task_id, b"done"))
        assert executor.results(1) == {1: (p.STATUS_OK, b"done")}
        assert broker.stats().queued == 0

    run(scenario)


def test_a_draining_replica_gets_no_new_tasks() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        old = Worker(context, broker, capacity=4, replica="cpu-old")
        broker.drain("cpu-old")
        executor = Executor(context, broker)
        executor.submit((1, b"x"))
        new = Worker(context, broker, replica="cpu-new")
        ((task_id, _),) = new.tasks(1)
        new.answer((task_id, b"from the new one"))
        assert executor.results(1) == {1: (p.STATUS_OK, b"from the new one")}
        assert broker.stats().replicas["cpu-old"]["running"] == 0
        assert old.reply[0][:1] == p.WELCOME

    run(scenario)


def test_a_worker_the_broker_does_not_know_is_told_to_register_again() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        stranger = dealer(context, broker.worker_address)
        stranger.send_multipart([p.HEARTBEAT])
        assert stranger.recv_multipart() == [p.RECONNECT]

    run(scenario)


def test_a_cut_off_submit_queues_none_of_its_tasks() -> None:
    def scenario(broker: Broker, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        executor = Executor(context, broker)
        whole = p.TASK_HEADER.pack(1, 0.0, p.INLINE) + b"first"
        without_payload = p.TASK_HEADER.pack(2, 0.0, 0)
        executor.sock.send_multipart([p.SUBMIT + b"cpu", whole, without_payload])
        assert executor.sock.recv_multipart()[0][:1] == p.REFUSED
        worker = Worker(context, broker, capacity=2)
        executor.submit((3, b"after"))
        assert [payload for _, payload in worker.tasks(1)] == [b"after"]
        assert broker.stats().queued == 0

    run(scenario)
