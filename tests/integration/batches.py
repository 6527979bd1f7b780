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


def lines_of(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The JSON lines of an output or error file (none without a file)."""
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]
