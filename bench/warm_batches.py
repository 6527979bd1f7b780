"""Interactive latency with a warm batch on the same replica, against without one.

Runs ``aifactory up`` with the chat service at one replica (SmolLM2, 1 thread,
2 slots), and sends it interactive chat requests through the gateway at
Poisson arrivals (``--rate`` per second, ``max_tokens`` 16, temperature 0)
for ``--seconds`` per phase. Each round runs both phases, back to back:

* ``alone``: only the interactive requests;
* ``warm batch``: the same requests while a ``metadata.backend: warm`` batch
  (lines of ``max_tokens`` 16) is answered by the same replica in its idle
  slots (bench: how many lines it got through in the phase).

Reported: interactive p50 / p95 / max latency over all requests of each
kind of phase, the batch's lines per second, and the median over rounds of
each round's ratio (warm batch / alone, run back to back: the machine's
other load drifts less within a round than across the run)::

    .venv/bin/python bench/warm_batches.py [--rate 1] [--seconds 15] [--rounds 6]

Results: a markdown table on stdout and ``bench/results/warm-batches.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import start_control_plane

REPO = Path(__file__).resolve().parent.parent
SPEC = (REPO / "examples" / "chat.yaml").read_text()


def interactive_body(i: int) -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": f"Write one line about the number {i}."}],
        "max_tokens": 16,
        "temperature": 0,
        "seed": 7,
    }


def batch_file(count: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"b{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {**interactive_body(10_000 + i)},
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


async def interactive(url: str, key: str, rate: float, seconds: float, seed: int) -> list[float]:
    """Latencies (s) of Poisson-arriving chat requests over ``seconds``."""
    rng = random.Random(seed)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(i: int) -> None:
            started = time.monotonic()
            async with session.post(f"{url}/v1/chat/completions", json=interactive_body(i)) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.monotonic() - started)

        tasks = []
        began = time.monotonic()
        at = 0.0
        i = 0
        while True:
            at += rng.expovariate(rate)
            if at > seconds:
                break
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        await asyncio.gather(*tasks)
    return latencies


def lines_done(client: OpenAI, batch_id: str) -> int:
    return int((client.batches.retrieve(batch_id).model_extra or {})["progress"]["lines_done"])


def phase(
    url: str, key: str, client: OpenAI, args: argparse.Namespace, seed: int, warm: bool
) -> dict[str, Any]:
    batch_id = ""
    if warm:
        data = batch_file(args.batch_lines)
        file_id = client.files.create(file=("warm.jsonl", io.BytesIO(data)), purpose="batch").id
        batch_id = client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"backend": "warm"},
        ).id
        # Measure from when the batch has started answering.
        while lines_done(client, batch_id) == 0:
            time.sleep(0.1)
    before = lines_done(client, batch_id) if warm else 0
    latencies = asyncio.run(interactive(url, key, args.rate, args.seconds, seed))
    after = lines_done(client, batch_id) if warm else 0
    if warm:
        client.batches.cancel(batch_id)
        while client.batches.retrieve(batch_id).status not in ("cancelled", "completed"):
            time.sleep(0.2)
    ordered = sorted(latencies)
    return {
        "phase": "warm batch" if warm else "alone",
        "requests": len(latencies),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "batch_lines_per_s": round((after - before) / args.seconds, 2) if warm else None,
        "latencies_s": [round(x, 4) for x in latencies],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-lines", type=int, default=5000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    os.chmod(data_dir, 0o711)
    process, url, _, admin_key = start_control_plane(
        data_dir, AIFACTORY_SLURM_LEND_PARTITION="lend"
    )
    phases: list[dict[str, Any]] = []
    try:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"})
        assert admin.post("/api/services", content=SPEC).status_code in (200, 201)
        while admin.get("/api/services/chat").json()["ready"] < 1:
            time.sleep(0.5)
        key = admin.post("/api/keys", json={"tenant": "bench"}).json()["key"]
        client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        asyncio.run(interactive(url, key, 2.0, 3.0, 0))  # warm the engine up
        for number in range(args.rounds):
            for warm in (False, True):
                result = phase(url, key, client, args, seed=number, warm=warm)
                shown = {k: v for k, v in result.items() if k != "latencies_s"}
                print(json.dumps(shown), flush=True)
                phases.append(result)
    finally:
        process.terminate()
        process.wait(20)
    summary = {}
    for name in ("alone", "warm batch"):
        pooled = sorted(x for p in phases if p["phase"] == name for x in p["latencies_s"])
        summary[name] = {
            "requests": len(pooled),
            "p50_ms": round(statistics.median(pooled) * 1000, 1),
            "p95_ms": round(pooled[int(0.95 * (len(pooled) - 1))] * 1000, 1),
            "max_ms": round(pooled[-1] * 1000, 1),
        }
    # Each round's two phases ran back to back: their ratio cancels the machine's drift.
    rounds = list(zip(phases[0::2], phases[1::2], strict=True))
    paired = {
        k: round(statistics.median(warm[k] / alone[k] for alone, warm in rounds), 3)
        for k in ("p50_ms", "p95_ms")
    }
    lines_per_s = statistics.median(
        p["batch_lines_per_s"] for p in phases if p["batch_lines_per_s"] is not None
    )
    print("\n| phase | requests | p50 ms | p95 ms | max ms | batch lines/s |")
    print("|---|---|---|---|---|---|")
    for name, values in summary.items():
        rate = lines_per_s if name == "warm batch" else "-"
        print(
            f"| {name} | {values['requests']} | {values['p50_ms']} | {values['p95_ms']} "
            f"| {values['max_ms']} | {rate} |"
        )
    print(f"\nmedian per-round ratio warm/alone: p50 {paired['p50_ms']}, p95 {paired['p95_ms']}")
    out = REPO / "bench" / "results" / "warm-batches.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": datetime.now().isoformat(timespec="seconds"),
                "machine": f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()}",
                "args": vars(args),
                "phases": phases,
                "summary": summary,
                "paired_ratio": paired,
                "batch_lines_per_s": lines_per_s,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
