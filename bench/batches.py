"""Batch throughput: a batch on one node against its engine driven directly, same input.

Runs ``aifactory up`` with the chat service deployed at zero replicas (so
only the batch's own engine uses the CPUs), sends an ``--lines`` chat batch
with the openai SDK (``max_tokens`` small, temperature 0) and follows it to
``completed``. Then, on the same machine, it starts the same engine by hand
(the argv the batch's worker ran) and sends it the same requests with the
same concurrency (the engine's ``parallel`` slots), as fast as it answers.

Reported:

* batch wall time from ``batches.create`` to ``completed``, split into the
  scheduler's wait (the shard's start), the time to the first line done
  (engine start included) and the rest;
* throughput: the batch's lines per second from its first line to its last,
  against the engine's own over the same requests, and their ratio (the
  goal is at least 90%).

::

    .venv/bin/python bench/batches.py [--lines 300] [--rounds 3] [--max-tokens 16] \\
        [--backend local|slurm]

Each round runs both sides, in alternating order, on the same control plane.
Results: a markdown table on stdout and ``bench/results/batches-BACKEND.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import _die_with_us, free_port, log, start_control_plane
from aifactory.engines import fill_address, render_engine
from aifactory.specs import load_deployable

REPO = Path(__file__).resolve().parent.parent
SPEC = (REPO / "examples" / "chat.yaml").read_text().replace("min: 1", "min: 0")


def lines(count: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "chat",
                "messages": [{"role": "user", "content": f"Write one line about the number {i}."}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "seed": 7,
            },
        }
        for i in range(count)
    ]


def tenant_client(url: str, admin_key: str) -> OpenAI:
    """Deploy the chat service (at zero replicas) and return a client with a tenant's key."""
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"})
    assert admin.post("/api/services", content=SPEC).status_code in (200, 201)
    key = admin.post("/api/keys", json={"tenant": "bench"}).json()["key"]
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def run_batch(client: OpenAI, requests: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    file_id = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch").id
    created = time.monotonic()
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"backend": backend},
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    wall = time.monotonic() - created
    if batch.status != "completed":
        raise SystemExit(f"the batch ended {batch.status}: {batch}")
    progress = (batch.model_extra or {})["progress"]
    assert batch.completed_at is not None
    processing = batch.completed_at - batch.created_at - progress["first_line_s"]
    return {
        "wall_s": round(wall, 2),
        "scheduler_wait_s": progress["scheduler_wait_s"],
        "first_line_s": progress["first_line_s"],
        "processing_s": round(processing, 2),
        "lines_per_s": round((len(requests) - 1) / processing, 3),
        "completion_tokens": batch.usage.output_tokens if batch.usage else None,
    }


def run_direct(requests: list[dict[str, Any]]) -> dict[str, Any]:
    service = load_deployable(SPEC)
    engine = render_engine(service, Path(tempfile.mkdtemp(prefix="bench-cache-")))  # type: ignore[arg-type]
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        fill_address(engine.argv, "127.0.0.1", port), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=_die_with_us,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        ready = time.monotonic() - started

        def call(request: dict[str, Any]) -> int:
            http = urllib.request.Request(
                base + request["url"], data=json.dumps(request["body"]).encode(),
                headers={"Content-Type": "application/json"}, method="POST",
            )  # fmt: skip
            with urllib.request.urlopen(http, timeout=600) as response:
                body = json.load(response)
            return int(body["usage"]["completion_tokens"])

        began = time.monotonic()
        with ThreadPoolExecutor(int(service.engine.args.get("parallel", 1))) as pool:  # type: ignore[union-attr]
            tokens = sum(pool.map(call, requests))
        took = time.monotonic() - began
    finally:
        process.terminate()
        process.wait(10)
    return {
        "engine_start_s": round(ready, 2),
        "processing_s": round(took, 2),
        "lines_per_s": round(len(requests) / took, 3),
        "completion_tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--backend", default="local", choices=("local", "slurm"))
    args = parser.parse_args()
    requests = lines(args.lines, args.max_tokens)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-batches-"))
    os.chmod(data_dir, 0o711)
    process, url, _, key = start_control_plane(data_dir, AIFACTORY_SLURM_LEND_PARTITION="lend")
    rounds: list[dict[str, Any]] = []
    try:
        client = tenant_client(url, key)
        # Alternating which goes first spreads the machine's other load over both.
        for number in range(args.rounds):
            result: dict[str, Any] = {}
            for side in ("batch", "direct") if number % 2 == 0 else ("direct", "batch"):
                log(f"round {number + 1}: {side}, {args.lines} lines")
                result[side] = (
                    run_batch(client, requests, args.backend)
                    if side == "batch"
                    else run_direct(requests)
                )
            result["ratio"] = result["batch"]["lines_per_s"] / result["direct"]["lines_per_s"]
            rounds.append(result)
    finally:
        process.terminate()
        process.wait(60)
    print(
        f"\n{args.lines} chat lines a round, max_tokens {args.max_tokens}, batch on "
        f"{args.backend}, {platform.node()}, {datetime.now():%Y-%m-%d %H:%M}\n"
    )
    print(
        "| round | batch: create to completed | scheduler wait | create to first line "
        "| batch lines/s (first to last line) | engine directly: start | lines/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for number, r in enumerate(rounds, start=1):
        b, d = r["batch"], r["direct"]
        print(
            f"| {number} | {b['wall_s']} s | {b['scheduler_wait_s']} s | {b['first_line_s']} s "
            f"| {b['lines_per_s']} | {d['engine_start_s']} s | {d['lines_per_s']} "
            f"| {r['ratio']:.1%} |"
        )
    median = statistics.median(r["ratio"] for r in rounds)
    print(f"\nbatch throughput / engine's own, median of {len(rounds)} rounds: {median:.1%}")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"batches-{args.backend}.json").write_text(
        json.dumps(
            {
                "lines": args.lines,
                "max_tokens": args.max_tokens,
                "backend": args.backend,
                "rounds": rounds,
                "median_ratio": median,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
