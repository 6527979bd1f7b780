"""Batch lines on a model's warm replicas, in their idle slots only: interactive requests first.

A batch created with ``metadata.backend: warm`` starts no job and no
engine: the control plane sends its lines to the replicas that already
serve the model, itself, through the fleet's public view (the same state
the gateway routes by). A replica takes a batch line only when::

    it is ready and not suspect,
    no interactive request is in flight on it (the gateway's leases),
    none went to the model for COOLDOWN_S (a request in a burst has company coming),
    and the batch's own lines on it leave half its engine's slots free (at least one)

A line is checked as the gateway checks a request (its shape, counts and
size against the model's context) and one it would refuse is answered with
the gateway's error, never sent. A line in flight on a replica that an
interactive request came to is dropped at once (within ``_TICK_S``): its
connection is closed, which stops the engine at its next token (text is
streamed from the engine and folded, as the gateway does), and the line is
sent again later. So interactive
requests find a free slot and the engine to themselves within a token or
two; the delay that is left is measured by bench/warm_batches.py. Batch
lines take no lease, so they neither count towards autoscaling nor keep a
replica from scaling down.

A run is an asyncio task of this process, one per shard, with the worker's
checkpoint: each answer is appended to the shard's output (the control
plane's own folder: it writes there itself) and fsynced before the next is
counted, and a run started again skips what the output holds. A run dies
with the control plane; the supervisor then starts it again. Lines run on
capacity already paid for: a warm run is charged its tokens, no node-hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from aifactory.backends import AllocationState
from aifactory.batches.shards import ShardLaunch, ShardState
from aifactory.batches.worker import Appender, done_ids, parse_args, record_of, shard_lines
from aifactory.control import Fleet, Lease, ModelEntry, ReplicaState
from aifactory.errors import AIFactoryError, APIError
from aifactory.gateway import (
    StreamFold,
    Usage,
    check_bounds,
    check_chat,
    check_counts,
    error_body,
)

logger = logging.getLogger(__name__)

COOLDOWN_S = 0.5
_TICK_S = 0.005
_REQUEST_TIMEOUT_S = 600.0
_STREAMED = ("/v1/chat/completions", "/v1/completions")
_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


@dataclass
class _Run:
    """One run of a shard on warm replicas."""

    task: asyncio.Task[int] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    reason: str = ""


class WarmShards:
    """Shards whose lines go to the model's warm replicas' idle slots (a ``ShardRunner``).

    Args:
        fleet: The control plane's fleet (its replicas, their interactive
            requests in flight, the last request per service).
        cooldown_s: How long after an interactive request no batch line starts.
    """

    name = "warm"

    def __init__(self, fleet: Fleet, cooldown_s: float = COOLDOWN_S) -> None:
        self._fleet = fleet
        self._cooldown_s = cooldown_s
        self._runs: dict[str, _Run] = {}
        self._numbers = itertools.count(1)
        # Batch lines in flight per replica, over every run of this process.
        self._lines_on: dict[str, int] = {}

    async def start(self, launch: ShardLaunch) -> str:
        """Start sending the shard's undone lines; the run's handle."""
        handle = f"warm-{next(self._numbers)}"
        run = _Run()
        run.task = asyncio.create_task(self._run(launch, run), name=f"{launch.name} {handle}")
        self._runs[handle] = run
        return handle

    async def state(self, launch: ShardLaunch, handle: str) -> ShardState:
        """Running until every line is answered or it was stopped (unknown after a restart)."""
        run = self._runs.get(handle)
        if run is None:
            return ShardState(AllocationState.UNKNOWN.value, "the control plane restarted")
        if run.task is None or not run.task.done():
            waiting = "" if run.in_flight else "waiting for an idle slot of a warm replica"
            return ShardState(AllocationState.RUNNING.value, waiting, run.started_at)
        del self._runs[handle]
        if run.task.cancelled() or run.stop.is_set():
            return ShardState(
                AllocationState.CANCELLED.value, "cancelled", run.started_at, run.ended_at
            )
        error = run.task.exception()
        if error is not None:
            return ShardState(
                AllocationState.FAILED.value, str(error), run.started_at, run.ended_at
            )
        state = AllocationState.COMPLETED if run.task.result() == 0 else AllocationState.FAILED
        return ShardState(state.value, run.reason, run.started_at, run.ended_at)

    async def cancel(self, launch: ShardLaunch, handle: str) -> None:
        """Send no new line; the lines in flight finish and are kept."""
        run = self._runs.get(handle)
        if run is not None:
            run.stop.set()

    def idle_replica(self, service: str, slots: int) -> Lease | None:
        """A replica of ``service`` with room for a batch line now (the least busy), if any.

        Not a fleet lease: nothing is taken from the fleet.
        """
        if time.monotonic() - self._fleet.last_request.get(service, 0.0) < self._cooldown_s:
            return None
        room = max(1, slots // 2)
        best: Lease | None = None
        least = room
        for replica in self._fleet.of_service(service):
            if replica.state is not ReplicaState.READY or replica.suspect or replica.in_flight:
                continue
            taken = self._lines_on.get(replica.id, 0)
            if taken < least:
                best, least = Lease(replica.id, replica.base_url), taken
        return best

    async def _run(self, launch: ShardLaunch, run: _Run) -> int:
        """Answer the shard's undone lines on idle replicas; 0 when all are done."""
        args = parse_args(list(launch.argv[3:]))
        appender = await asyncio.to_thread(Appender, args.output)
        try:
            done = await asyncio.to_thread(done_ids, args.output)
            lines = await asyncio.to_thread(list, shard_lines(args.input, args.shard, args.shards))
            todo = [r for r in lines if r["custom_id"] not in done]
            logger.info("%s: %d done, %d to do on warm replicas", launch.name, len(done), len(todo))
            timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
            # Keep no cookies: an engine must not set what the next engine is sent.
            jar = aiohttp.DummyCookieJar()
            async with aiohttp.ClientSession(timeout=timeout, cookie_jar=jar) as session:
                left = await self._send(
                    launch.service, session, todo, args.concurrency, appender, run
                )
        finally:
            await asyncio.to_thread(appender.close)
            run.ended_at = time.time()
        run.reason = f"{left} lines not answered" if left else ""
        return 1 if left else 0

    async def _send(
        self,
        service: str,
        session: aiohttp.ClientSession,
        todo: list[dict[str, Any]],
        slots: int,
        appender: Appender,
        run: _Run,
    ) -> int:
        """Send ``todo`` one line per idle slot, in order; how many are left unanswered."""
        pending = list(reversed(todo))
        running: dict[asyncio.Task[dict[str, Any] | None], tuple[str, dict[str, Any]]] = {}
        while (pending and not run.stop.is_set()) or running:
            while pending and not run.stop.is_set():
                replica = self.idle_replica(service, slots)
                if replica is None:
                    break
                request = pending.pop()
                refused = _refused(request, self._fleet.resolve(request["body"]["model"]))
                if refused is not None:
                    await asyncio.to_thread(appender.append, refused)
                    continue
                self._lines_on[replica.replica_id] = self._lines_on.get(replica.replica_id, 0) + 1
                answer = asyncio.create_task(_answer(session, replica.base_url, request))
                running[answer] = (replica.replica_id, request)
            run.in_flight = len(running)
            if not running:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.stop.wait(), _TICK_S)
                continue
            finished, _ = await asyncio.wait(
                running, timeout=_TICK_S, return_when=asyncio.FIRST_COMPLETED
            )
            preempted = self._preempt(running, finished)
            if preempted:
                await asyncio.wait(preempted)
            for task in finished | preempted:
                replica_id, request = running.pop(task)
                self._lines_on[replica_id] -= 1
                if not self._lines_on[replica_id]:
                    del self._lines_on[replica_id]
                record = None if task.cancelled() else task.result()
                if record is None:
                    # Preempted, or the replica never answered: again later, maybe elsewhere.
                    pending.append(request)
                else:
                    await asyncio.to_thread(appender.append, record)
        return len(pending)

    def _preempt(
        self,
        running: dict[asyncio.Task[dict[str, Any] | None], tuple[str, dict[str, Any]]],
        finished: set[asyncio.Task[dict[str, Any] | None]],
    ) -> set[asyncio.Task[dict[str, Any] | None]]:
        """Drop the lines on a replica an interactive request came to (they are sent again).

        Closing the connection stops the engine at its next token.
        """
        preempted = set()
        for task, (replica_id, _request) in running.items():
            replica = self._fleet.replicas.get(replica_id)
            if task not in finished and (replica is None or replica.in_flight):
                task.cancel()
                preempted.add(task)
        return preempted


def _refused(request: dict[str, Any], entry: ModelEntry | None) -> dict[str, Any] | None:
    """The output line of a request the gateway would refuse (None: send it).

    A shared replica gets from a batch only what it would take from the
    gateway: the same shape, count and size checks, answered the same way.
    """
    try:
        endpoint = _ENDPOINTS[request["url"]]
        if endpoint == "chat":
            check_chat(request["body"], entry.text_only if entry else False)
        check_counts(endpoint, request["body"])
        check_bounds(endpoint, request["body"], entry.context_tokens if entry else None)
    except APIError as exc:
        return record_of(request, exc.status_code, json.dumps(error_body(exc)).encode())
    return None


async def _answer(
    session: aiohttp.ClientSession, base_url: str, request: dict[str, Any]
) -> dict[str, Any] | None:
    """One output line: the replica's answer (any HTTP status); None when it gave none.

    Text is asked for as a stream and folded into the one answer (as the
    gateway does): llama.cpp stops generating for a client that left only
    while it streams, and a preempted line's client leaves.
    """
    body = request["body"]
    streamed = request["url"] in _STREAMED
    if streamed:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with session.post(base_url + request["url"], json=body) as response:
            if not streamed or response.status != 200:
                return record_of(request, response.status, await response.read())
            fold = StreamFold(Usage())
            async for chunk in response.content.iter_any():
                fold.feed(chunk)
            status, payload = fold.result()
            return record_of(request, status, payload)
    except (aiohttp.ClientError, TimeoutError, AIFactoryError) as exc:
        logger.warning("a batch line on %s got no answer: %s", base_url, exc)
        return None
