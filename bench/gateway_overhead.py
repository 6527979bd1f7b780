"""Gateway overhead: aifactory vs a bare proxy vs LiteLLM vs direct, in one run.

Every target fronts the same upstream process (bench/minimal_upstream.py,
deployed through aifactory as a real ``openai-compatible`` replica), gets the
same request mix and the same concurrency. The targets:

* ``direct``: the upstream itself;
* ``bare``: bench/bare_proxy.py, raw ASGI + aiohttp with no auth or metering,
  the floor a Python gateway is measured against;
* ``aifactory``: a *tenant* key (not the admin key) with no limits set;
* ``aifactory-limits``: the same gateway, a tenant key whose tenant has
  every request limit set (requests and tokens per minute, concurrency, a
  token budget), all far above the load, so every request is checked and
  metered but none is refused;
* ``litellm``: LiteLLM's proxy (``--skip-litellm`` leaves it out).

The measurements:

* latency: open loop at a fixed moderate rate that every target sustains
  (default 10 req/s; LiteLLM pinned to one core streams only 25-50 req/s here)
  for twice ``--duration`` seconds, non-streamed and streamed, with a Python
  aiohttp client; ``added`` = target minus direct, percentile by percentile;
* throughput: closed loop at concurrency 32 for ``--duration`` seconds, with
  ``wrk`` when it is installed (``apt-get install wrk``), otherwise with a
  Python aiohttp client.

With two or more CPUs, the proxy under test is pinned to the first one (what
``taskset -c 0`` does) and the load generator and the upstream to the second.

::

    .venv/bin/python bench/gateway_overhead.py [--duration S] [--rate R] [--skip-litellm]

The gateway goal (``vs bare`` in the report): at least 80% of the bare
proxy's req/s, at most 1.25x its CPU per request, added p50 within 0.5 ms of
the bare proxy's, with limits on and off (measure latency with ``--rate 200``).

Results: a markdown table on stdout and ``bench/results/gateway_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
UPSTREAM_SCRIPT = BENCH_DIR / "minimal_upstream.py"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
RESULTS_FILE = BENCH_DIR / "results" / "gateway_overhead.json"

MODEL = "bench-model"
SERVICE = "bench-upstream"
# What the Python clients verify HTTPS with: the system's CAs, plus the
# gateway's self-signed certificate under --tls (wrk does not verify).
TRUST = ssl.create_default_context()
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one short sentence."},
]
BARE_SCRIPT = BENCH_DIR / "bare_proxy.py"
TARGETS = ("direct", "bare", "aifactory", "aifactory-limits", "litellm")
LAT_GOAL = 1 / 3
RPS_GOAL = 3.0
BARE_RPS_GOAL = 0.8
BARE_CPU_GOAL = 1.25
BARE_ADDED_P50_GOAL_MS = 0.5
# Every request limit, far above what the benchmark sends.
BENCH_LIMITS = {
    "requests_per_minute": 100_000_000,
    "tokens_per_minute": 2_000_000_000,
    "concurrent_requests": 100_000,
    "token_budget": 10**15,
    "period": "month",
}
_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


# --------------------------------------------------------------------------
# processes: every child is registered here and killed on the way out


_PR_SET_PDEATHSIG = 1


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:
        # Die with the benchmark even if it is killed with -9.
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Children:
    """Child processes, each in its own session, stopped in reverse order."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._extra: list[tuple[int, str]] = []  # (pid, cmdline fragment) not ours directly

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        cpu: int | None = None,
    ) -> subprocess.Popen[bytes]:
        out: Any = subprocess.DEVNULL
        if log_path is not None:
            out = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup(cpu),
            )
        finally:
            if log_path is not None:
                out.close()
        self._procs.append((name, proc))
        return proc

    def sessions(self) -> set[int]:
        """Session ids of every process the benchmark started (directly or not)."""
        return {p.pid for _n, p in self._procs} | {session_of(pid) for pid, _f in self._extra}

    def adopt(self, pid: int, fragment: str) -> None:
        """Also kill ``pid`` at the end if it still runs ``fragment`` (a grandchild)."""
        self._extra.append((pid, fragment))

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def cleanup(self) -> list[str]:
        """Stop everything; return what had to be killed the hard way."""
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        killed = []
        for name, proc in self._procs:
            if proc.poll() is None:
                killed.append(name)
            # The group may hold children that outlived their leader.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        time.sleep(0.3)
        for pid, fragment in self._extra:
            if _alive(pid) and fragment in _cmdline(pid):
                killed.append(f"pid {pid} ({fragment})")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._procs.clear()
        self._extra.clear()
        return killed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# CPU accounting (/proc), to show which core saturated, what the proxy under
# test spent per request, and how much CPU other processes took meanwhile

_TICK = os.sysconf("SC_CLK_TCK")


def _core_ticks() -> dict[int, tuple[int, int]]:
    """(total, idle) ticks of each core."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts and parts[0].startswith("cpu") and parts[0] != "cpu":
            values = [int(v) for v in parts[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            times[int(parts[0][3:])] = (sum(values[:8]), idle)
    return times


def _session_ticks(sessions: set[int]) -> dict[int, int]:
    """CPU ticks (user + system, all threads) per session id, over every process."""
    ticks: dict[int, int] = dict.fromkeys(sessions, 0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        sid = int(fields[3])
        if sid in ticks:
            ticks[sid] += int(fields[11]) + int(fields[12])
    return ticks


def _self_ticks() -> int:
    """This process's ticks, plus those of the children it reaped (wrk)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def session_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return pid


@dataclass
class CpuMeter:
    """Measures one phase; ``sessions`` are the benchmark's own process sessions."""

    sessions: set[int]
    sut_session: int | None
    result: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, Any]]:
        cores0, own0, self0 = _core_ticks(), _session_ticks(self.sessions), _self_ticks()
        wall0 = time.monotonic()
        yield self.result
        cores1, own1, self1 = _core_ticks(), _session_ticks(self.sessions), _self_ticks()
        wall = time.monotonic() - wall0
        busy_ticks = 0
        cores = {}
        for cpu, (total, idle) in cores1.items():
            total0, idle0 = cores0.get(cpu, (0, 0))
            span = total - total0
            busy = span - (idle - idle0)
            busy_ticks += busy
            cores[cpu] = round(100.0 * busy / span, 1) if span else 0.0
        ours = sum(own1[s] - own0.get(s, 0) for s in own1) + (self1 - self0)
        sut = own1.get(self.sut_session, 0) - own0.get(self.sut_session, 0)
        self.result.update(
            cores_busy_pct=cores,
            sut_cpu_s=round(sut / _TICK, 3),
            sut_core_pct=round(100.0 * sut / _TICK / wall, 1) if wall else 0.0,
            others_core_pct=round(max(0.0, 100.0 * (busy_ticks - ours) / _TICK / wall), 1),
        )


def _busy_text(usage: dict[str, Any]) -> str:
    cores = " ".join(f"cpu{c} {b:.0f}%" for c, b in sorted(usage["cores_busy_pct"].items()))
    return (
        f"{cores}; proxy {usage['sut_core_pct']:.0f}% of a core; "
        f"other processes {usage['others_core_pct']:.0f}%"
    )


def foreign_load(sessions: set[int], seconds: float = 1.0) -> float:
    """% of a core used by processes that are not the benchmark's, over ``seconds``."""
    meter = CpuMeter(sessions, None)
    with meter.measure():
        time.sleep(seconds)
    return float(meter.result["others_core_pct"])


# --------------------------------------------------------------------------
# targets


@dataclass
class Target:
    name: str
    base_url: str
    model: str
    api_key: str
    session: int | None = None  # the session id of the process(es) under test

    @property
    def url(self) -> str:
        return self.base_url + "/v1/chat/completions"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    def body(self, stream: bool) -> bytes:
        document: dict[str, Any] = {
            "model": self.model,
            "messages": MESSAGES,
            "max_tokens": 16,
            "temperature": 0,
        }
        if stream:
            document["stream"] = True
        return json.dumps(document).encode()


async def _wait_http(
    session: aiohttp.ClientSession,
    url: str,
    proc: subprocess.Popen[bytes],
    timeout_s: float,
    what: str,
    log_path: Path,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode}:\n{tail(log_path)}")
        try:
            method = "POST" if "data" in kwargs else "GET"
            async with session.request(method, url, **kwargs) as response:
                await response.read()
                if response.status == 200:
                    return response
                last = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(0.25)
    raise BenchError(f"{what} not ready after {timeout_s:.0f}s ({last}):\n{tail(log_path)}")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key; ``TRUST`` trusts it from now on."""
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    cert.chmod(0o644)  # the replica's launcher (the workload's user) verifies with it
    TRUST.load_verify_locations(cafile=str(cert))
    return cert, key


async def start_aifactory(
    children: Children, workdir: Path, sut_cpu: int | None, load_cpu: int | None, tls: bool
) -> tuple[Target, Target, Target, dict[str, Any]]:
    """Start ``aifactory up``, deploy the upstream as a replica, mint two tenant keys.

    One tenant has no limits, the other every request limit (``BENCH_LIMITS``).
    ``tls``: the gateway serves HTTPS (a self-signed certificate).
    """
    data_dir = workdir / "aifactory"
    data_dir.mkdir()
    port = free_port()
    log_path = workdir / "aifactory.log"
    env = {
        **os.environ,
        "AIFACTORY_DATA_DIR": str(data_dir),
        "AIFACTORY_HOST": "127.0.0.1",
        "AIFACTORY_PORT": str(port),
        "AIFACTORY_CONFIG": str(workdir / "no-config.toml"),
        "AIFACTORY_DRAIN_TIMEOUT_S": "2",
        # Only the gateway is measured: no S3 or functions listeners that could
        # collide with another aifactory on this machine.
        "AIFACTORY_OBJECTS_PORT": "0",
        "AIFACTORY_FUNCTIONS_WORKER_PORT": "0",
        "AIFACTORY_FUNCTIONS_CLIENT_PORT": "0",
    }
    if tls:
        cert, key = self_signed_certificate(workdir / "tls")
        env |= {"AIFACTORY_TLS_CERT": str(cert), "AIFACTORY_TLS_KEY": str(key)}
    env.pop("AIFACTORY_DATABASE_URL", None)
    proc = children.start(
        "aifactory",
        [sys.executable, "-m", "aifactory", "up"],
        env=env,
        log_path=log_path,
        cpu=sut_cpu,
    )
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(ssl=TRUST)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _wait_http(session, base + "/healthz", proc, 60, "aifactory", log_path)
        admin = (data_dir / "admin.key").read_text().strip()
        auth = {"Authorization": f"Bearer {admin}"}
        upstream_argv = [sys.executable, str(UPSTREAM_SCRIPT)]
        spec = {
            "name": SERVICE,
            "models": [{"name": MODEL}],
            "engine": {
                "type": "openai-compatible",
                "command": [*upstream_argv, "--host", "{host}", "--port", "{port}"],
            },
            "resources": {"cpus": 1, "memory_gib": 0.25},
            "replicas": {"min": 1, "max": 1},
            "backend": "local",
            "health": {"path": "/health", "start_timeout_s": 60},
        }
        async with session.post(
            base + "/api/services", data=json.dumps(spec), headers=auth
        ) as response:
            if response.status not in (200, 201):
                raise BenchError(f"deploy failed: {response.status} {await response.text()}")
        log("aifactory: service deployed; waiting for its replica to be ready")
        deadline = time.monotonic() + 60
        while True:
            async with session.get(f"{base}/api/services/{SERVICE}", headers=auth) as response:
                described = await response.json()
            if described.get("ready", 0) >= 1:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise BenchError(
                    f"replica not ready after 60s: {json.dumps(described)[:600]}\n{tail(log_path)}"
                )
            await asyncio.sleep(0.3)
        async with session.get(f"{base}/api/services/{SERVICE}/replicas", headers=auth) as response:
            replicas = (await response.json())["replicas"]
        ready = [r for r in replicas if r["state"] == "ready" and r["address"]]
        if not ready:
            raise BenchError(f"no ready replica with an address: {replicas}")
        replica = ready[-1]
        if replica.get("handle", "").isdigit():
            children.adopt(int(replica["handle"]), "aifactory.launcher")
        key = await _tenant_key(session, base, auth, "bench", None)
        limited_key = await _tenant_key(session, base, auth, "bench-limited", BENCH_LIMITS)
        upstream_base = f"http://{replica['address']}"
        async with session.get(upstream_base + "/health") as response:
            upstream_pid = int((await response.json())["pid"])
    children.adopt(upstream_pid, str(UPSTREAM_SCRIPT.name))
    # The replica inherited the gateway's CPU; move it next to the load generator.
    if load_cpu is not None:
        os.sched_setaffinity(upstream_pid, {load_cpu})
    info = {
        "port": port,
        "pid": proc.pid,
        "replica": {k: replica.get(k) for k in ("id", "address", "handle", "state")},
        "upstream_pid": upstream_pid,
        "log": str(log_path),
    }
    gateway = Target("aifactory", base, MODEL, key, session=proc.pid)
    limited = Target("aifactory-limits", base, MODEL, limited_key, session=proc.pid)
    direct = Target("direct", upstream_base, MODEL, "sk-none", session=session_of(upstream_pid))
    return direct, gateway, limited, info


async def _tenant_key(
    session: aiohttp.ClientSession,
    base: str,
    auth: dict[str, str],
    tenant: str,
    limits: dict[str, Any] | None,
) -> str:
    """A user key of ``tenant`` (created, with ``limits`` when given)."""
    async with session.post(base + "/api/tenants", json={"name": tenant}, headers=auth) as response:
        if response.status not in (200, 201):
            raise BenchError(f"tenant creation failed: {response.status} {await response.text()}")
    if limits:
        async with session.put(
            f"{base}/api/tenants/{tenant}/limits", json=limits, headers=auth
        ) as response:
            if response.status != 200:
                raise BenchError(
                    f"setting limits failed: {response.status} {await response.text()}"
                )
    async with session.post(
        base + "/api/keys", json={"tenant": tenant, "name": "gateway-overhead"}, headers=auth
    ) as response:
        if response.status not in (200, 201):
            raise BenchError(f"key creation failed: {response.status} {await response.text()}")
        return str((await response.json())["key"])


async def start_bare(
    children: Children, workdir: Path, upstream_base: str, sut_cpu: int | None
) -> Target:
    """Start bench/bare_proxy.py in front of the upstream, on the proxy's core."""
    port = free_port()
    log_path = workdir / "bare.log"
    argv = [sys.executable, str(BARE_SCRIPT), "--upstream", upstream_base, "--port", str(port)]
    proc = children.start("bare", argv, env=dict(os.environ), log_path=log_path, cpu=sut_cpu)
    target = Target("bare", f"http://127.0.0.1:{port}", MODEL, "none", session=proc.pid)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _wait_http(
            session, target.url, proc, 30, "bare proxy", log_path,
            data=target.body(False), headers=target.headers(),
        )  # fmt: skip
    return target


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"litellm: not installed; installing litellm[proxy] into {LITELLM_VENV} (a few minutes)")
    install_log = BENCH_DIR / "results" / "litellm-install.log"
    install_log.parent.mkdir(parents=True, exist_ok=True)
    with install_log.open("wb") as out:
        for argv in (
            [sys.executable, "-m", "venv", str(LITELLM_VENV)],
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
        ):
            code = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800
            ).returncode
            if code != 0:
                raise BenchError(f"{argv[0]} failed ({code}); see {install_log}")
    if not exe.exists():
        raise BenchError(f"litellm installed but {exe} is missing; see {install_log}")
    return exe


async def start_litellm(
    children: Children, workdir: Path, upstream_base: str, sut_cpu: int | None
) -> tuple[Target, dict[str, Any]]:
    exe = await asyncio.to_thread(ensure_litellm)
    port = free_port()
    master = "sk-" + secrets.token_hex(32)
    log_path = workdir / "litellm.log"
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master,
        "OPENAI_API_KEY": "sk-none",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PATH": f"{LITELLM_VENV / 'bin'}:{os.environ.get('PATH', '')}",
    }
    env.pop("VIRTUAL_ENV", None)
    model = f"openai/{MODEL}"
    argv = [
        str(exe), "--model", model, "--api_base", upstream_base + "/v1",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    proc = children.start("litellm", argv, env=env, log_path=log_path, cpu=sut_cpu)
    target = Target("litellm", f"http://127.0.0.1:{port}", model, master, session=proc.pid)
    log(f"litellm: started (pid {proc.pid}, port {port}); waiting until it answers (10-40 s)")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await _wait_http(
            session, target.url, proc, 180, "litellm", log_path,
            data=target.body(False), headers=target.headers(),
        )  # fmt: skip
    dist = sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
    version = dist[-1].name.removeprefix("litellm-").removesuffix(".dist-info") if dist else ""
    return target, {"port": port, "pid": proc.pid, "version": version, "log": str(log_path)}


# --------------------------------------------------------------------------
# load generation


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(latencies_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "p50_ms": round(pct(ms, 0.50), 3),
        "p90_ms": round(pct(ms, 0.90), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


class ErrorLog:
    def __init__(self) -> None:
        self.count = 0
        self.kinds: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, kind: str, detail: str) -> None:
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {detail[:300]}")

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "kinds": self.kinds, "samples": self.samples}


async def one_request(
    session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool, errors: ErrorLog
) -> tuple[float, float] | None:
    """Send one request; (latency to last byte, to first byte) in seconds, or None."""
    started = time.perf_counter()
    first = 0.0
    try:
        async with session.post(target.url, data=body, headers=target.headers()) as response:
            if not stream:
                data = await response.read()
                first = time.perf_counter()
                if response.status != 200 or b'"choices"' not in data:
                    errors.add(f"HTTP {response.status}", data.decode(errors="replace"))
                    return None
            else:
                chunks = []
                async for chunk in response.content.iter_any():
                    if not chunks:
                        first = time.perf_counter()
                    chunks.append(chunk)
                data = b"".join(chunks)
                if response.status != 200 or b"data: [DONE]" not in data:
                    errors.add(f"HTTP {response.status} stream", data.decode(errors="replace"))
                    return None
    except (aiohttp.ClientError, TimeoutError) as exc:
        errors.add(type(exc).__name__, str(exc))
        return None
    done = time.perf_counter()
    return done - started, first - started


def _session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False, ssl=TRUST),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def smoke(target: Target) -> None:
    """One request of each kind, checked, before any load."""
    errors = ErrorLog()
    async with _session() as session:
        for stream in (False, True):
            if await one_request(session, target, target.body(stream), stream, errors) is None:
                raise BenchError(f"{target.name}: smoke request failed: {errors.samples}")


async def fixed_rate(
    target: Target, stream: bool, rate: float, duration_s: float, warmup_s: float = 1.0
) -> dict[str, Any]:
    """Open loop: one request every 1/rate s regardless of completions."""
    body = target.body(stream)
    errors = ErrorLog()
    latencies: list[float] = []
    firsts: list[float] = []
    n_warm = int(rate * warmup_s)
    n = int(rate * duration_s)
    loop = asyncio.get_running_loop()

    async def run(index: int, session: aiohttp.ClientSession) -> None:
        result = await one_request(
            session, target, body, stream, errors if index >= n_warm else ErrorLog()
        )
        if result is not None and index >= n_warm:
            latencies.append(result[0])
            firsts.append(result[1])

    async with _session() as session:
        tasks = []
        start = loop.time() + 0.05
        for i in range(n_warm + n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(run(i, session)))
        await asyncio.gather(*tasks)
    result: dict[str, Any] = {
        "rate": rate,
        "duration_s": duration_s,
        "requests": n,
        "ok": len(latencies),
        "errors": errors.as_dict(),
        **summarize(latencies),
    }
    if stream:
        result["first_byte_p50_ms"] = round(pct(firsts, 0.5) * 1000, 3)
        result["first_byte_p99_ms"] = round(pct(firsts, 0.99) * 1000, 3)
    return result


async def closed_loop_python(
    target: Target, stream: bool, concurrency: int, duration_s: float
) -> dict[str, Any]:
    body = target.body(stream)
    errors = ErrorLog()
    latencies: list[float] = []
    async with _session(limit=concurrency) as session:
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                result = await one_request(session, target, body, stream, errors)
                if result is not None:
                    latencies.append(result[0])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "tool": "python-aiohttp",
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "requests": len(latencies) + errors.count,
        "ok": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "errors": errors.as_dict(),
        **summarize(latencies),
    }


_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {auth}
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def closed_loop_wrk(
    wrk: str, target: Target, stream: bool, concurrency: int, duration_s: float, workdir: Path
) -> dict[str, Any]:
    script = workdir / f"wrk-{target.name}-{'stream' if stream else 'json'}.lua"
    script.write_text(
        _WRK_SCRIPT.format(
            body=_lua_string(target.body(stream).decode()),
            auth=_lua_string(f"Bearer {target.api_key}"),
        )
    )
    argv = [
        wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--latency",
        "--timeout", "10s", "-s", str(script), target.url,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), duration_s + 30)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if proc.returncode != 0 or total is None:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text}")
    requests = int(total.group(1))
    elapsed_s = _wrk_ms(total.group(2) + total.group(3)) / 1000
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    bad = int(non2xx.group(1)) if non2xx else 0
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True))
        if sockets
        else {}
    )
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+(?:us|ms|s|m))\s*$", text, re.M))
    errors = bad + sum(socket_errors.values())
    return {
        "tool": "wrk",
        "concurrency": concurrency,
        "elapsed_s": round(elapsed_s, 3),
        "requests": requests,
        "ok": requests - bad,
        "rps": round((requests - bad) / elapsed_s, 1) if elapsed_s else 0.0,
        "errors": {"count": errors, "non_2xx": bad, "socket": socket_errors},
        "p50_ms": _wrk_ms(dist.get("50", "")),
        "p90_ms": _wrk_ms(dist.get("90", "")),
        "p99_ms": _wrk_ms(dist.get("99", "")),
        "raw": text,
    }


async def upstream_stats(direct: Target) -> dict[str, int]:
    async with _session() as session, session.get(direct.base_url + "/stats") as response:
        return dict(await response.json())


# --------------------------------------------------------------------------
# the run


async def measure_target(
    target: Target,
    direct: Target,
    args: argparse.Namespace,
    wrk: str | None,
    workdir: Path,
    sessions: set[int],
) -> dict[str, Any]:
    result: dict[str, Any] = {"base_url": target.base_url, "model": target.model}
    await smoke(target)
    stats_before = await upstream_stats(direct)
    sent = 0
    for stream in (False, True):
        kind = "stream" if stream else "json"
        log(
            f"{target.name}: latency, {kind}, {args.rate:g} req/s open loop for "
            f"{args.latency_duration:g}s (1s warm-up first)"
        )
        # Keep the load generator's own GC pauses out of the latencies.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            with CpuMeter(sessions, target.session).measure() as usage:
                lat = await fixed_rate(target, stream, args.rate, args.latency_duration)
        finally:
            gc.enable()
            gc.unfreeze()
        lat["cpu"] = usage
        lat["sut_cpu_us_per_request"] = round(usage["sut_cpu_s"] / max(1, lat["ok"]) * 1e6, 1)
        sent += lat["requests"] + int(args.rate)  # with the 1 s warm-up
        result[f"latency_{kind}"] = lat
        log(
            f"{target.name}:   p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms  "
            f"ok {lat['ok']}/{lat['requests']}  errors {lat['errors']['count']}"
        )
    for stream in (False, True):
        kind = "stream" if stream else "json"
        tool = "wrk" if wrk else "python"
        log(
            f"{target.name}: max throughput, {kind}, concurrency {args.concurrency}, "
            f"{args.duration:g}s ({tool}; 2s warm-up first)"
        )
        if wrk:
            warm = await closed_loop_wrk(wrk, target, stream, args.concurrency, 2, workdir)
            with CpuMeter(sessions, target.session).measure() as usage:
                tput = await closed_loop_wrk(
                    wrk, target, stream, args.concurrency, args.duration, workdir
                )
        else:
            warm = await closed_loop_python(target, stream, args.concurrency, 2)
            with CpuMeter(sessions, target.session).measure() as usage:
                tput = await closed_loop_python(target, stream, args.concurrency, args.duration)
        sent += warm["requests"] + tput["requests"]
        tput["cpu"] = usage
        tput["sut_cpu_us_per_request"] = round(usage["sut_cpu_s"] / max(1, tput["ok"]) * 1e6, 1)
        result[f"throughput_{kind}"] = tput
        log(
            f"{target.name}:   {tput['rps']:.0f} req/s  (p50 {tput['p50_ms']:.1f} ms, "
            f"p99 {tput['p99_ms']:.1f} ms, errors {tput['errors']['count']}; "
            f"{tput['sut_cpu_us_per_request']:.0f} us CPU/request)"
        )
        log(f"{target.name}:   {_busy_text(usage)}")
        tput["bound_by_load_generator"] = usage["sut_core_pct"] < 90
        if target.name != "direct" and tput["bound_by_load_generator"]:
            log(
                f"{target.name}:   NOTE: the proxy got under 90% of its core (other processes "
                "or the load-generator side held it back): this req/s is a lower bound"
            )
        if usage["others_core_pct"] > 15:
            log(
                f"{target.name}:   WARNING: other processes took {usage['others_core_pct']:.0f}% "
                "of a core during this measurement; it is not reliable"
            )
    stats_after = await upstream_stats(direct)
    reached = sum(stats_after.values()) - sum(stats_before.values())
    result["upstream_requests"] = {"sent": sent, "reached_upstream": reached}
    return result


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def _latency_ratio(aif: float | None, lite: float | None) -> float | None:
    """aifactory's added latency over LiteLLM's; 0 when aifactory's is within noise (<= 0)."""
    if aif is None or lite is None or lite <= 0:
        return None
    return max(0.0, aif) / lite


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    targets = results["targets"]
    base = targets.get("direct")
    for name, data in targets.items():
        if not data or "error" in data or base is None:
            continue
        for kind in ("json", "stream"):
            lat = data[f"latency_{kind}"]
            lat["added_p50_ms"] = round(lat["p50_ms"] - base[f"latency_{kind}"]["p50_ms"], 3)
            lat["added_p99_ms"] = round(lat["p99_ms"] - base[f"latency_{kind}"]["p99_ms"], 3)
            if name == "direct":
                lat["added_p50_ms"] = lat["added_p99_ms"] = 0.0

    header = (
        "| target | p50 ms | p99 ms | added p50/p99 ms | stream p50 ms | stream p99 ms "
        "| stream added p50/p99 ms | max req/s non-stream | max req/s stream |"
    )
    lines = [header, "|" + "---|" * 9]
    for name in TARGETS:
        data = targets.get(name)
        if data is None:
            lines.append(f"| {name} | skipped |" + " |" * 8)
            continue
        if "error" in data:
            lines.append(f"| {name} | failed: {data['error'][:60]} |" + " |" * 8)
            continue
        j, s = data["latency_json"], data["latency_stream"]
        tj, ts = data["throughput_json"], data["throughput_stream"]
        lines.append(
            f"| {name} | {_fmt(j['p50_ms'])} | {_fmt(j['p99_ms'])} "
            f"| {_fmt(j.get('added_p50_ms'))} / {_fmt(j.get('added_p99_ms'))} "
            f"| {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} "
            f"| {_fmt(s.get('added_p50_ms'))} / {_fmt(s.get('added_p99_ms'))} "
            f"| {_fmt(tj['rps'], 0)} | {_fmt(ts['rps'], 0)} |"
        )
    table = "\n".join(lines)
    cpu_lines = [
        "| target | server CPU us/req non-stream | server CPU us/req stream "
        "| server core % at max (non-stream / stream) "
        "| other processes, % of a core (max over phases) |",
        "|---|---|---|---|---|",
    ]
    for name in TARGETS:
        data = targets.get(name)
        if not data or "error" in data:
            continue
        phases = [data[k] for k in data if k.startswith(("latency_", "throughput_"))]
        cpu_lines.append(
            f"| {name} | {_fmt(data['throughput_json']['sut_cpu_us_per_request'], 0)} "
            f"| {_fmt(data['throughput_stream']['sut_cpu_us_per_request'], 0)} "
            f"| {_fmt(data['throughput_json']['cpu']['sut_core_pct'], 0)} / "
            f"{_fmt(data['throughput_stream']['cpu']['sut_core_pct'], 0)} "
            f"| {_fmt(max(p['cpu']['others_core_pct'] for p in phases), 0)} |"
        )

    ratios: dict[str, Any] = {}
    aif, lite = targets.get("aifactory"), targets.get("litellm")
    if aif and lite and "error" not in aif and "error" not in lite:
        for kind in ("json", "stream"):
            for q in ("p50", "p99"):
                r = _latency_ratio(
                    aif[f"latency_{kind}"][f"added_{q}_ms"],
                    lite[f"latency_{kind}"][f"added_{q}_ms"],
                )
                ratios[f"added_latency_{q}_{kind}"] = None if r is None else round(r, 4)
            r = _ratio(aif[f"throughput_{kind}"]["rps"], lite[f"throughput_{kind}"]["rps"])
            ratios[f"rps_{kind}"] = None if r is None else round(r, 2)
    bare_lines = _versus_bare(targets)
    results["versus_bare"] = bare_lines[1]
    out = ["", "## Gateway overhead", "", table, "", *cpu_lines, "", *bare_lines[0], ""]
    out.append(
        f"Latency: open loop at {args.rate:g} req/s for {args.latency_duration:g}s per cell "
        "(Python aiohttp client, time to the full response / the end of the stream); "
        "added = target minus direct, per percentile."
    )
    out.append(
        "Server CPU: CPU time of the process under test (the proxy; for direct, the "
        "upstream) per successful request during the throughput runs."
    )
    out.append(
        f"Throughput: closed loop, concurrency {args.concurrency}, {args.duration:g}s, "
        f"{results['config']['throughput_tool']}; successful responses per second."
    )
    out.append(f"Pinning: {results['config']['pinning']}")
    out.append(
        "direct's max req/s is bounded by its core, shared by the load generator and the "
        "upstream; it only shows that neither limits the proxies."
    )
    if ratios:
        out.append("")
        out.append("Ratios (aifactory / LiteLLM):")
        for kind, label in (("json", "non-stream"), ("stream", "stream")):
            for q in ("p50", "p99"):
                r = ratios[f"added_latency_{q}_{kind}"]
                ok = "n/a" if r is None else ("meets" if r <= LAT_GOAL else "MISSES")
                out.append(f"- added latency {q} {label}: {_fmt(r, 3)} (goal <= 0.333: {ok})")
        for kind, label in (("json", "non-stream"), ("stream", "stream")):
            r = ratios[f"rps_{kind}"]
            ok = "n/a" if r is None else ("meets" if r >= RPS_GOAL else "MISSES")
            out.append(f"- max req/s {label}: {_fmt(r, 2)}x (goal >= 3: {ok})")
    elif args.skip_litellm:
        out.append("")
        out.append("Ratios: n/a (--skip-litellm)")
    print("\n".join(out), flush=True)
    return ratios


def _versus_bare(targets: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The gateway goal: aifactory (limits off and on) against the bare proxy, same run."""
    bare = targets.get("bare")
    if not bare or "error" in bare:
        return [], {}
    lines = [
        "| vs bare proxy | req/s (goal >= 0.80) | CPU/req (goal <= 1.25) "
        "| added p50 minus bare's, ms (goal <= 0.5) |",
        "|---|---|---|---|",
    ]
    ratios: dict[str, Any] = {}
    for name in ("aifactory", "aifactory-limits"):
        data = targets.get(name)
        if not data or "error" in data:
            continue
        for kind, label in (("json", "non-stream"), ("stream", "stream")):
            rps = _ratio(data[f"throughput_{kind}"]["rps"], bare[f"throughput_{kind}"]["rps"])
            cpu = _ratio(
                data[f"throughput_{kind}"]["sut_cpu_us_per_request"],
                bare[f"throughput_{kind}"]["sut_cpu_us_per_request"],
            )
            added = round(
                data[f"latency_{kind}"]["added_p50_ms"] - bare[f"latency_{kind}"]["added_p50_ms"], 3
            )
            ratios[f"{name}_{kind}"] = {"rps": rps, "cpu": cpu, "added_p50_ms": added}
            verdicts = (
                "meets" if rps is not None and rps >= BARE_RPS_GOAL else "MISSES",
                "meets" if cpu is not None and cpu <= BARE_CPU_GOAL else "MISSES",
                "meets" if added <= BARE_ADDED_P50_GOAL_MS else "MISSES",
            )
            lines.append(
                f"| {name} {label} | {_fmt(rps)} ({verdicts[0]}) | {_fmt(cpu)} ({verdicts[1]}) "
                f"| {_fmt(added)} ({verdicts[2]}) |"
            )
    return lines, ratios


def _gateway_problems(log_path: Path) -> list[str]:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]


async def run(args: argparse.Namespace, children: Children, workdir: Path) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)

    cpus = sorted(os.sched_getaffinity(0))
    sut_cpu = load_cpu = None
    if len(cpus) >= 2 and not args.no_pin:
        sut_cpu, load_cpu = cpus[0], cpus[1]
        os.sched_setaffinity(0, {load_cpu})
        pinning = (
            f"proxy under test on cpu{sut_cpu} (sched_setaffinity, as `taskset -c {sut_cpu}`); "
            f"load generator and upstream on cpu{load_cpu}; for `direct` cpu{sut_cpu} idles"
        )
    else:
        pinning = "none"
    wrk = None if args.loadgen == "python" else shutil.which("wrk")
    if args.loadgen == "wrk" and wrk is None:
        raise BenchError("--loadgen wrk, but wrk is not installed (apt-get install wrk)")
    results: dict[str, Any] = {
        "config": {
            "duration_s": args.duration,
            "latency_duration_s": args.latency_duration,
            "rate": args.rate,
            "concurrency": args.concurrency,
            "throughput_tool": "wrk -t1" if wrk else "python aiohttp",
            "latency_tool": "python aiohttp, open loop",
            "pinning": pinning,
            "tls": args.tls,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "targets": {},
    }
    log(f"pinning: {pinning}")
    others = await asyncio.to_thread(foreign_load, set(), 1.0)
    results["config"]["others_core_pct_before"] = others
    log(f"CPU used by other processes before starting: {others:.0f}% of a core")
    if others > 15:
        log("WARNING: the machine is not idle; expect noisy numbers")
    log("aifactory: starting `aifactory up` with a temporary data dir")
    direct, gateway, limited, aif_info = await start_aifactory(
        children, workdir, sut_cpu, load_cpu, args.tls
    )
    results["aifactory"] = aif_info
    log(
        f"aifactory: up on :{aif_info['port']}; replica {aif_info['replica']['id']} "
        f"at {aif_info['replica']['address']} (upstream pid {aif_info['upstream_pid']})"
    )
    bare = await start_bare(children, workdir, direct.base_url, sut_cpu)
    log(f"bare proxy: up at {bare.base_url}")
    targets = [direct, bare, gateway, limited]
    litellm_target = None
    if not args.skip_litellm:
        try:
            litellm_target, lite_info = await start_litellm(
                children, workdir, direct.base_url, sut_cpu
            )
            results["litellm"] = lite_info
            log(f"litellm {lite_info['version']}: ready on :{lite_info['port']}")
            targets.append(litellm_target)
        except BenchError as exc:
            log(f"litellm: FAILED to start: {exc}")
            results["targets"]["litellm"] = {"error": str(exc)}

    for target in targets:
        try:
            results["targets"][target.name] = await measure_target(
                target, direct, args, wrk, workdir, children.sessions()
            )
        except BenchError as exc:
            log(f"{target.name}: FAILED: {exc}")
            results["targets"][target.name] = {"error": str(exc)}
        if target is litellm_target:
            # Stop it now: nothing else needs it.
            for name, proc in list(children._procs):
                if name == "litellm":
                    children.stop(proc)

    problems = _gateway_problems(Path(aif_info["log"]))
    results["aifactory"]["log_problems"] = problems[:50]
    results["ratios"] = report(results, args)
    for name, data in results["targets"].items():
        if not data or "error" in data:
            continue
        for key in ("latency_json", "latency_stream", "throughput_json", "throughput_stream"):
            if data[key]["errors"]["count"]:
                print(
                    f"WARNING: {name} {key}: {data[key]['errors']['count']} errors: "
                    f"{json.dumps(data[key]['errors'])[:400]}"
                )
        up = data["upstream_requests"]
        if name != "direct" and up["reached_upstream"] < up["sent"] * 0.95:
            print(
                f"WARNING: {name}: only {up['reached_upstream']} of {up['sent']} requests "
                "reached the upstream"
            )
    for name, data in results["targets"].items():
        if not data or "error" in data:
            continue
        capacity = min(data["throughput_json"]["rps"], data["throughput_stream"]["rps"])
        if capacity and args.rate > 0.5 * capacity:
            print(
                f"NOTE: the latency rate ({args.rate:g} req/s) is over half of {name}'s "
                f"capacity ({capacity:.0f} req/s); its latencies include queueing"
            )
    if problems:
        print(f"\naifactory logged {len(problems)} warnings/errors, first ones:")
        print("\n".join(problems[:10]))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    for data in results["targets"].values():
        for key in ("throughput_json", "throughput_stream"):
            if data and key in data:
                data[key].pop("raw", None)
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON results: {RESULTS_FILE}")
    failed = [n for n, d in results["targets"].items() if d and "error" in d]
    return 1 if failed else 0


def keep_logs(workdir: Path) -> None:
    """Copy the proxies' and the replica's logs next to the JSON results."""
    dest = RESULTS_FILE.parent / "logs" / "gateway_overhead"
    with contextlib.suppress(OSError):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, exist_ok=True)
        for path in [*workdir.glob("*.log"), *workdir.glob("aifactory/logs/**/*.log")]:
            shutil.copyfile(path, dest / path.name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Compare the request overhead of aifactory's gateway and LiteLLM's proxy."
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement (default 10)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="req/s of the latency runs (default 10: LiteLLM, pinned to one core, "
        "streams only 25-50 req/s here, and the rate must be one every target sustains)",
    )
    parser.add_argument(
        "--latency-duration",
        type=float,
        default=None,
        help="seconds per latency run (default: twice --duration, for enough samples)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="connections of the throughput runs (default 32)",
    )
    parser.add_argument(
        "--skip-litellm", action="store_true", help="measure only direct and aifactory"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="throughput load generator (auto: wrk when installed)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--tls", action="store_true", help="aifactory serves HTTPS (a self-signed certificate)"
    )
    args = parser.parse_args()
    if args.latency_duration is None:
        args.latency_duration = 2 * args.duration
    if not (
        1 <= args.duration <= 120
        and 1 <= args.latency_duration <= 240
        and 1 <= args.rate <= 1000
        and 1 <= args.concurrency <= 1024
    ):
        parser.error(
            "--duration must be 1-120 s, --latency-duration 1-240 s, --rate 1-1000, "
            "--concurrency 1-1024"
        )

    children = Children()
    code = 1
    with tempfile.TemporaryDirectory(prefix="aif-bench-") as tmp:
        workdir = Path(tmp)
        # The upstream replica runs as the workload user: let it pass through.
        workdir.chmod(0o711)
        try:
            code = asyncio.run(run(args, children, workdir))
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\ninterrupted", file=sys.stderr)
            code = 130
        finally:
            log("stopping child processes")
            killed = children.cleanup()
            if killed:
                log(f"had to kill: {', '.join(killed)}")
            keep_logs(workdir)
    return code


if __name__ == "__main__":
    sys.exit(main())
