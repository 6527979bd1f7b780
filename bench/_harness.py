"""Helpers the benchmarks share: logs, processes, a control plane, the Slurm cluster, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "slurm-dev-cluster.sh"

_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


_PR_SET_PDEATHSIG = 1


def _die_with_us() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_control_plane(
    data_dir: Path, **settings: str
) -> tuple[subprocess.Popen[bytes], str, str, str]:
    """``aifactory up`` on free ports with ``settings`` (``AIFACTORY_…``) added.

    Returns:
        The process, the API's URL, the S3 endpoint's URL and the admin key.
    """
    port, objects_port = free_port(), free_port()
    env = {
        **os.environ,
        "AIFACTORY_DATA_DIR": str(data_dir),
        "AIFACTORY_PORT": str(port),
        "AIFACTORY_CONFIG": str(data_dir / "absent.toml"),
        "AIFACTORY_OBJECTS_PORT": str(objects_port),
        "AIFACTORY_FUNCTIONS_WORKER_PORT": "0",
        "AIFACTORY_FUNCTIONS_CLIENT_PORT": "0",
        **settings,
    }
    out = (data_dir / "server.out").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "aifactory", "up"], env=env, stdout=out, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_us,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                key = (data_dir / "admin.key").read_text().strip()
                return process, url, f"http://127.0.0.1:{objects_port}", key
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"aifactory up did not start:\n{tail(data_dir / 'server.out')}")


def run(argv: list[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def ensure_cluster() -> dict[str, Any]:
    status = run(["bash", str(CLUSTER_SCRIPT), "status"])
    brought_up = False
    if status.returncode != 0:
        log("slurm: dev cluster not up; running deploy/slurm-dev-cluster.sh up (may install)")
        up = run(["bash", str(CLUSTER_SCRIPT), "up"], timeout_s=1800)
        if up.returncode != 0:
            raise BenchError(f"slurm-dev-cluster.sh up failed:\n{up.stdout[-1500:]}{up.stderr}")
        brought_up = True
    version = run(["sinfo", "--version"]).stdout.strip()
    nodes = run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %T"]).stdout.split("\n")
    log(f"slurm: {version}; nodes: {', '.join(n for n in nodes if n)}")
    return {"version": version, "nodes": [n for n in nodes if n], "brought_up": brought_up}


def job_state(job_id: str) -> str:
    """Slurm's state word for a job, '' when it knows nothing of it."""
    out = run(["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"]).stdout.split()
    return out[0] if out else ""


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"median": None, "max": None, "min": None, "n": 0}
    return {
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
        "n": len(values),
    }


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier) * 1000, 1)


def _cpu_ticks() -> tuple[int, int]:
    """(total, idle) ticks of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]), values[3] + values[4]


async def busy_pct(seconds: float) -> float:
    """How busy the machine's CPUs were over ``seconds`` (all processes, ours idle)."""
    total0, idle0 = _cpu_ticks()
    await asyncio.sleep(seconds)
    total1, idle1 = _cpu_ticks()
    span = total1 - total0
    return round(100.0 * (span - (idle1 - idle0)) / span, 1) if span else 0.0


async def settle(limit_pct: float, max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) for a second with the CPUs under ``limit_pct`` busy."""
    deadline = time.monotonic() + max_wait_s
    busy = await busy_pct(1.0)
    while busy > limit_pct and time.monotonic() < deadline:
        busy = await busy_pct(1.0)
    return busy
