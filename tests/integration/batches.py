"""Helpers of the Batch API tests: input files, polling, reading output files."""

from __future__ import annotations

import json
import time
from typing import Any

from openai import OpenAI
from openai.types import Batch

FINAL = {"completed", "failed", "expired", "cancelled"}


def chat_lines(count: int, max_tokens: int = 8, model: str = "chat") -> bytes:
    """``count`` chat requests with deterministic sampling, one per line."""
    return _jsonl(
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Count from {i} to {i + 5}."}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "seed": 7,
            },
        }
        for i in range(count)
    )


def short_chat_lines(count: int, model: str = "chat", repeat: int = 10) -> bytes:
    """``count`` one-token chat requests, each body repeated on ``repeat`` lines in a row.

    Affordable at 1,000 lines (seconds, not minutes, on one CPU thread): the
    engine answers a request whose prompt its slot just saw from its prompt
    cache, and a body is called directly once for all its lines.
    """
    return _jsonl(
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Say {i // repeat}."}],
                "max_tokens": 1,
                "temperature": 0,
                "seed": 7,
            },
        }
        for i in range(count)
    )


def check_chat_answers(client: OpenAI, data: bytes, out: list[dict[str, Any]]) -> None:
    """Every output line answers its request as a direct call of its body does, in input order."""
    requests = [json.loads(line) for line in data.splitlines()]
    assert [line["custom_id"] for line in out] == [r["custom_id"] for r in requests]
    direct: dict[str, str | None] = {}
    for line, request in zip(out, requests, strict=True):
        assert line["response"]["status_code"] == 200 and line["error"] is None, line
        body = json.dumps(request["body"], sort_keys=True)
        if body not in direct:
            reply = client.chat.completions.create(**request["body"])
            direct[body] = reply.choices[0].message.content
        got = line["response"]["body"]["choices"][0]["message"]["content"]
        assert got == direct[body], line["custom_id"]


def check_embeddings(client: OpenAI, data: bytes, out: list[dict[str, Any]]) -> None:
    """Every output line's vector is, within 1e-4, the direct call's for its input.

    The direct calls send 100 inputs each (the engine embeds each one alone).
    """
    requests = [json.loads(line) for line in data.splitlines()]
    assert [line["custom_id"] for line in out] == [r["custom_id"] for r in requests]
    for start in range(0, len(requests), 100):
        chunk = requests[start : start + 100]
        model = chunk[0]["body"]["model"]
        direct = client.embeddings.create(model=model, input=[r["body"]["input"] for r in chunk])
        for line, want in zip(out[start : start + 100], direct.data, strict=True):
            got = line["response"]["body"]["data"][0]["embedding"]
            assert len(got) == len(want.embedding), line["custom_id"]
            assert max(abs(a - b) for a, b in zip(got, want.embedding, strict=True)) < 1e-4


def embedding_lines(count: int) -> bytes:
    """``count`` embeddings requests, one per line."""
    return _jsonl(
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "embed", "input": f"sentence number {i} about the sea"},
        }
        for i in range(count)
    )


def _jsonl(records: Any) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def wait_for(client: OpenAI, batch_id: str, done: Any = None, timeout_s: float = 600) -> Batch:
    """Poll the batch until ``done(batch)`` (default: a final status)."""
    done = done or (lambda b: b.status in FINAL)
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} did not get there: {batch}")
        time.sleep(0.5)


def wait_completed(client: OpenAI, batch_id: str) -> tuple[Batch, float]:
    """Poll the batch until it ends; it must have completed. Returns it and the seconds waited."""
    started = time.monotonic()
    batch = wait_for(client, batch_id)
    assert batch.status == "completed", batch
    return batch, time.monotonic() - started


def lines_of(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The JSON lines of an output or error file (none without a file)."""
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]
