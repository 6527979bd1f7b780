"""End to end: the openai SDK against the gateway, real llama.cpp, real models."""

from __future__ import annotations

import math
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion

from .server import Server

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def client(server: Server, user_key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=user_key, max_retries=0)


def test_models_are_listed(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {CHAT, "chat", EMBED, "embed"} <= ids
    assert client.models.retrieve(CHAT).id == CHAT


def test_chat_non_streamed(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0


def test_chat_streamed_arrives_incrementally(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Count from one to twenty in words."}],
        max_tokens=48,
        stream=True,
        extra_body={"ignore_eos": True},  # llama.cpp: always generate max_tokens tokens
    )
    arrivals: list[float] = []
    pieces: list[str] = []
    for chunk in stream:
        assert chunk.choices, "usage-only chunk leaked to a client that did not ask for it"
        if chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces).strip()
    assert len(arrivals) >= 10
    # Chunks come over time as tokens are generated, not in one buffered burst.
    assert arrivals[-1] - arrivals[0] > 0.05


def test_stream_usage_when_asked(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens > 0


def test_completions(client: OpenAI) -> None:
    reply = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=8)
    assert reply.choices[0].text
    stream = client.completions.create(
        model=CHAT, prompt="One, two, three,", max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_a_model_asked_for_what_its_engine_does_not_serve_is_a_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="serves /v1/embeddings") as chat:
        client.chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "hi"}])
    assert chat.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="serves /v1/chat/completions"):
        client.embeddings.create(model=CHAT, input="hello")


def test_embeddings_are_meaningful(client: OpenAI) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    result = client.embeddings.create(model=EMBED, input=texts)
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2]) + 0.3
    assert result.usage.prompt_tokens > 0


def test_usage_rows_are_written(server: Server, client: OpenAI) -> None:
    client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
    ).close()
    client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    time.sleep(1.5)  # the ledger flushes every second
    with sqlite3.connect(server.data_dir / "aifactory.db") as db:
        rows = db.execute(
            "SELECT t.name, u.model, u.endpoint, u.prompt_tokens, u.completion_tokens "
            "FROM usage u JOIN tenants t ON t.id = u.tenant_id WHERE t.name = 'physics'"
        ).fetchall()
    models = {r[1] for r in rows}
    assert models == {CHAT, EMBED}  # aliases are recorded under the canonical name
    assert all(r[3] > 0 for r in rows)
    assert any(r[2] == "chat" and r[4] > 0 for r in rows)
    assert {r[2] for r in rows} >= {"chat", "completions", "embeddings"}


def test_no_key_and_wrong_key_get_401_json(server: Server) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "x"}]}
    missing = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    wrong = OpenAI(base_url=f"{server.url}/v1", api_key="aif-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    assert "Incorrect API key" in info.value.message


def test_unknown_model_is_404_json(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "model_not_found"


def test_prompt_that_cannot_fit_the_context_is_400_before_the_engine(client: OpenAI) -> None:
    # The chat engine holds 4096 tokens, and no token is longer than 128 characters.
    cases = [
        ("messages", lambda: _chat(client, "word " * (4096 * 128 // 5 + 1))),
        ("messages", lambda: _chat(client, "x" * 3_000_000)),  # the engine took seconds for it
        ("prompt", lambda: client.completions.create(model=CHAT, prompt=[1] * 4097, max_tokens=1)),
        # Each embedding input on its own (the embedding engine holds 512 tokens).
        ("input", lambda: client.embeddings.create(model=EMBED, input=["short", "x " * 40_000])),
    ]
    for param, send in cases:
        started = time.perf_counter()
        with pytest.raises(openai.BadRequestError) as refused:
            send()
        assert time.perf_counter() - started < 2
        assert refused.value.code == "context_length_exceeded", refused.value.body
        assert refused.value.param == param
        assert "maximum context length" in refused.value.message
    # What fits still goes through.
    assert _chat(client, "word " * 200).choices
    assert len(client.embeddings.create(model=EMBED, input=["short"] * 3).data) == 3


def test_logit_bias_is_bounded_like_openai(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _chat(client, "Hi", logit_bias={str(token): 1 for token in range(301)})
    assert refused.value.param == "logit_bias"
    assert "at most 300" in refused.value.message
    assert _chat(client, "Hi", logit_bias={str(token): 1 for token in range(300)}).choices


def _chat(client: OpenAI, content: str, **extra: object) -> ChatCompletion:
    return client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": content}],
        max_tokens=1,
        **extra,
    )


def test_concurrent_requests_of_one_key_are_all_served(server: Server) -> None:
    # A concurrency limit makes admission wait on the store, where requests interleave.
    assert server.admin.post("/api/tenants", json={"name": "crowd"}).status_code == 201
    limits = {"concurrent_requests": 50, "requests_per_minute": 100_000, "tokens_per_minute": 10**7}
    assert server.admin.put("/api/tenants/crowd/limits", json=limits).status_code == 200
    key = server.admin.post("/api/keys", json={"tenant": "crowd"}).json()["key"]

    def embed_five_times(_: int) -> list[int]:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            return [
                http.post(
                    f"{server.url}/v1/embeddings", json={"model": EMBED, "input": "hello"}
                ).status_code
                for _ in range(5)
            ]

    with ThreadPoolExecutor(20) as pool:
        statuses = [status for five in pool.map(embed_five_times, range(20)) for status in five]
    assert statuses == [200] * 100


def test_oversize_body_is_413_json(server: Server, user_key: str) -> None:
    huge = "x" * (17 * 1024 * 1024)
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {user_key}"},
        json={"model": CHAT, "messages": [{"role": "user", "content": huge}]},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_malformed_requests_are_400_json(server: Server, user_key: str) -> None:
    headers = {"Authorization": f"Bearer {user_key}"}
    bad_json = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, content=b"{nope")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    no_model = httpx.post(f"{server.url}/v1/embeddings", headers=headers, json={"input": "x"})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"


def test_every_v1_response_carries_its_request_id(server: Server, user_key: str) -> None:
    """Answers, streams and errors alike; a sane client id is echoed, else one is minted."""
    auth = {"Authorization": f"Bearer {user_key}"}
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        answered = http.post(
            "/v1/chat/completions", json=chat, headers={**auth, "X-Request-Id": "t-1"}
        )
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={**chat, "stream": True},
            headers={**auth, "X-Request-Id": "t-2"},
        ) as streamed:
            streamed.read()
        no_key = http.post("/v1/chat/completions", json=chat, headers={"X-Request-Id": "t-3"})
        no_model = http.post(
            "/v1/chat/completions",
            json={**chat, "model": "nope"},
            headers={**auth, "X-Request-Id": "t-4"},
        )
        models = http.get("/v1/models", headers={**auth, "X-Request-Id": "t-5"})
        minted = http.get("/v1/nowhere", headers={**auth, "X-Request-Id": "bad id"})
    statuses = [r.status_code for r in (answered, streamed, no_key, no_model, models)]
    assert statuses == [200, 200, 401, 404, 200]
    ids = [
        r.headers.get_list("x-request-id") for r in (answered, streamed, no_key, no_model, models)
    ]
    assert ids == [["t-1"], ["t-2"], ["t-3"], ["t-4"], ["t-5"]]
    assert minted.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{16}", minted.headers["x-request-id"])


def test_member_and_inference_keys_cannot_administer(server: Server, user_key: str) -> None:
    headers = {"Authorization": f"Bearer {user_key}"}
    assert httpx.get(f"{server.url}/api/keys", headers=headers).status_code == 403
    inference = server.admin.post("/api/keys", json={"tenant": "physics", "role": "inference"})
    headers = {"Authorization": f"Bearer {inference.json()['key']}"}
    deploy = httpx.post(f"{server.url}/api/services", headers=headers, content=b"name: x\n")
    assert deploy.status_code == 403


def test_metrics_and_health(server: Server, client: OpenAI) -> None:
    client.embeddings.create(model="embed", input="hello")
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["unreachable"] == []
    text = server.admin.get("/metrics").text
    assert (
        'aifactory_requests_total{endpoint="embeddings",model="all-minilm-l6-v2",status="200"}'
        in text
    )
    assert 'aifactory_replicas{backend="local",service="chat",state="ready"} 1.0' in text
    assert "aifactory_request_duration_seconds_bucket" in text
    assert 'aifactory_tokens_total{kind="prompt",model="all-minilm-l6-v2"}' in text
