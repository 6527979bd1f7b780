"""Warm batches: lines go only to a ready replica with no interactive request, and resume.

The replica is a small aiohttp server standing in for an engine (it counts
what it is sent); the fleet is the control plane's own ``Fleet``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from aifactory.batches.shards import ShardLaunch
from aifactory.batches.warm import WarmShards
from aifactory.batches.worker import done_ids
from aifactory.control import Fleet, ReplicaState
from aifactory.control.fleet import LiveReplica
from aifactory.identity import Identity
from aifactory.specs import Resources

ALICE = Identity(user="alice", uid=1001, group="alice", gid=1001)


def _launch(tmp_path: Path, count: int) -> ShardLaunch:
    source = tmp_path / "in.jsonl"
    lines = (
        {
            "custom_id": f"q{i}",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": i},
        }
        for i in range(count)
    )
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = (
        "python", "-m", "aifactory.batches.worker", "--input", str(source),
        "--output", str(tmp_path / "out.jsonl"), "--concurrency", "2", "--", "engine",
    )  # fmt: skip
    return ShardLaunch(
        name="batch-x-0",
        service="chat",
        argv=argv,
        identity=ALICE,
        folder=tmp_path,
        input=source,
        resources=Resources(),
        time_limit_s=None,
        lend=False,
        tenant=None,
    )


async def _engine(seen: list[int], token_s: float = 0.002) -> tuple[web.AppRunner, str]:
    """A stand-in engine: streams four words, then usage; ``seen`` gets what it finished."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("n", "=", " ", str(body["seed"])):
            await asyncio.sleep(token_s)
            delta = {"choices": [{"index": 0, "delta": {"content": word}}]}
            await response.write(f"data: {json.dumps(delta)}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
        await response.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        seen.append(body["seed"])
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _scenario(
    body: Callable[[Fleet, LiveReplica, list[int]], Awaitable[None]], token_s: float = 0.002
) -> None:
    async def run() -> None:
        seen: list[int] = []
        runner, url = await _engine(seen, token_s)
        fleet = Fleet()
        replica = LiveReplica("chat-1", "chat", "local", state=ReplicaState.READY, base_url=url)
        fleet.replicas[replica.id] = replica
        try:
            await body(fleet, replica, seen)
        finally:
            await runner.cleanup()

    asyncio.run(run())


async def _until_ended(shards: WarmShards, launch: ShardLaunch, handle: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = await shards.state(launch, handle)
        if state.ended:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError("the warm run did not end")


def test_lines_wait_while_the_replica_serves_an_interactive_request(tmp_path: Path) -> None:
    async def body(fleet: Fleet, replica: LiveReplica, seen: list[int]) -> None:
        shards = WarmShards(fleet, cooldown_s=0.0)
        launch = _launch(tmp_path, 20)
        replica.in_flight = 1  # an interactive request holds a lease
        handle = await shards.start(launch)
        await asyncio.sleep(0.3)
        assert seen == []
        state = await shards.state(launch, handle)
        assert state.state == "running" and "idle slot" in state.reason
        replica.in_flight = 0
        state = await _until_ended(shards, launch, handle)
        assert state.state == "completed", state
        # One line at a time: half the engine's two slots stay free for interactive requests.
        assert seen == list(range(20))
        answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        contents = [a["response"]["body"]["choices"][0]["message"]["content"] for a in answers]
        assert contents == [f"n= {i}" for i in range(20)]
        assert answers[0]["response"]["body"]["usage"]["completion_tokens"] == 4
        assert answers[0]["custom_id"] == "q0" and answers[0]["response"]["status_code"] == 200

    _scenario(body)


def test_no_line_starts_within_the_cooldown_of_an_interactive_request(tmp_path: Path) -> None:
    async def body(fleet: Fleet, replica: LiveReplica, seen: list[int]) -> None:
        shards = WarmShards(fleet, cooldown_s=0.4)
        fleet.last_request["chat"] = time.monotonic()
        assert shards.idle_replica("chat", 2) is None
        await asyncio.sleep(0.45)
        lease = shards.idle_replica("chat", 2)
        assert lease is not None and lease.replica_id == replica.id
        replica.suspect = True
        assert shards.idle_replica("chat", 2) is None
        replica.suspect, replica.state = False, ReplicaState.DRAINING
        assert shards.idle_replica("chat", 2) is None

    _scenario(body)


def test_a_cancelled_run_keeps_its_lines_and_a_new_run_resumes(tmp_path: Path) -> None:
    async def body(fleet: Fleet, replica: LiveReplica, seen: list[int]) -> None:
        shards = WarmShards(fleet, cooldown_s=0.0)
        launch = _launch(tmp_path, 40)
        handle = await shards.start(launch)
        for _ in range(500):
            if len(seen) >= 5:
                break
            await asyncio.sleep(0.01)
        await shards.cancel(launch, handle)
        state = await _until_ended(shards, launch, handle)
        assert state.state == "cancelled"
        kept = done_ids(tmp_path / "out.jsonl")
        assert 5 <= len(kept) < 40
        state = await _until_ended(shards, launch, await shards.start(launch))
        assert state.state == "completed"
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(
            f"q{i}" for i in range(40)
        )
        # The first run's answers were not asked again.
        assert len(seen) == 40

    _scenario(body)


def test_a_line_an_interactive_request_overtakes_is_dropped_and_sent_again(
    tmp_path: Path,
) -> None:
    async def body(fleet: Fleet, replica: LiveReplica, seen: list[int]) -> None:
        shards = WarmShards(fleet, cooldown_s=0.0)
        launch = _launch(tmp_path, 3)
        handle = await shards.start(launch)
        await asyncio.sleep(0.1)  # the first line is half streamed (0.05 s a word)
        replica.in_flight = 1
        await asyncio.sleep(0.3)
        assert seen == []  # dropped: the engine never finished it
        replica.in_flight = 0
        state = await _until_ended(shards, launch, handle)
        assert state.state == "completed", state
        assert seen == [0, 1, 2]
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert [json.loads(line)["custom_id"] for line in lines] == ["q0", "q1", "q2"]

    _scenario(body, token_s=0.05)


def test_a_line_the_gateway_would_refuse_is_answered_with_its_error_not_sent(
    tmp_path: Path,
) -> None:
    async def body(fleet: Fleet, replica: LiveReplica, seen: list[int]) -> None:
        shards = WarmShards(fleet, cooldown_s=0.0)
        launch = _launch(tmp_path, 2)
        lines = launch.input.read_text().splitlines()
        bad = json.loads(lines[1])
        bad["body"]["max_tokens"] = -1  # llama.cpp: no limit; the gateway: 400
        launch.input.write_text(lines[0] + "\n" + json.dumps(bad) + "\n")
        state = await _until_ended(shards, launch, await shards.start(launch))
        assert state.state == "completed", state
        assert seen == [0]
        answers = {
            a["custom_id"]: a["response"]
            for a in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
        }
        assert answers["q1"]["status_code"] == 400
        assert answers["q1"]["body"]["error"]["param"] == "max_tokens"

    _scenario(body)
