"""Control-plane scale: 1,000 services x 10 replicas, on SQLite and on PostgreSQL.

Starts ``aifactory up`` (``_control_scale_server.py``: the real App, whose
planner holds the measurement backend of ``_instant_backend.py`` as
``local``: allocations start and register at once, so only the control
plane's own work is measured) and one ``minimal_upstream.py`` every replica
registers at (its health checks answer 200 at once). Then, per store:

1. deploys one service through ``POST /api/services`` and waits for its
   replicas; measures routing (resolve + acquire + release, in the process)
   against this 1-service fleet;
2. deploys the other services one after another, timing each POST (the
   reconciler launches and registers replicas meanwhile, as it would);
3. waits for a steady fleet (every replica ready), then measures one
   reconcile pass, ``GET /api/services``, routing again, the control plane
   process's CPU while idle and its memory (RSS).

Specs set ``health.interval_s`` to an hour: a health probe is network I/O
per replica and interval, the same at any number of services; left out, the
numbers are the control plane's own bookkeeping.

::

    .venv/bin/python bench/control_scale.py [--stores sqlite,postgres]
        [--services 1000] [--replicas 10] [--postgres-url URL]

Results: a markdown table on stdout and ``bench/results/control_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine.url import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BenchError, _die_with_us, free_port, log, tail

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "control_scale.json"
POSTGRES_URL = "postgresql+psycopg://aifactory:aifactory@127.0.0.1:55432/aifactory"
BENCH_DATABASE = "aif_bench_control_scale"
IDLE_S = 20.0
STEADY_TIMEOUT_S = 900.0
TICK_GOAL_MS = 1000.0
LIST_GOAL_MS = 100.0

SPEC = """\
name: {name}
models: [{name}-model]
engine: {{type: openai-compatible, command: "serve --host {{host}} --port {{port}}"}}
resources: {{cpus: 1, memory_gib: 1}}
replicas: {{min: {replicas}, max: {replicas}}}
health: {{interval_s: 3600}}
"""


def _name(index: int) -> str:
    return f"svc-{index:04d}"


def _fresh_postgres(url: str) -> str:
    """A new, empty database beside ``url``'s, so the tests' data is never touched."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {BENCH_DATABASE}"))
    admin.dispose()
    return make_url(url).set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class ControlPlaneProcess:
    """The control plane under test, in its own process (its CPU and memory are its own)."""

    def __init__(self, work: Path, database_url: str, health_port: int) -> None:
        self.port = free_port()
        self.log_path = work / "server.log"
        data_dir = work / "data"
        argv = [
            sys.executable, str(BENCH_DIR / "_control_scale_server.py"),
            "--data-dir", str(data_dir), "--database-url", database_url,
            "--port", str(self.port), "--objects-port", str(free_port()),
            "--worker-port", str(free_port()), "--client-port", str(free_port()),
            "--health-port", str(health_port),
        ]  # fmt: skip
        with self.log_path.open("w") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_us
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while not (data_dir / "admin.key").exists() or not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the control plane did not start:\n{tail(self.log_path)}")
            time.sleep(0.2)
        key = (data_dir / "admin.key").read_text().strip()
        self.client = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=600
        )

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def deploy(self, name: str, replicas: int) -> float:
        """Deploy one service; seconds the POST took."""
        started = time.perf_counter()
        response = self.client.post(
            "/api/services", content=SPEC.format(name=name, replicas=replicas)
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 201:
            raise BenchError(f"deploy {name}: {response.status_code} {response.text}")
        return elapsed

    def wait_ready(self, replicas: int, timeout_s: float) -> float:
        """Seconds until ``replicas`` replicas are ready."""
        started = time.monotonic()
        while self.get("/bench/state")["ready"] < replicas:
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"not {replicas} ready after {timeout_s:.0f}s: {self.state()}")
            time.sleep(0.5)
        return round(time.monotonic() - started, 1)

    def state(self) -> dict[str, Any]:
        return dict(self.get("/bench/state"))

    def route_us(self, model: str) -> float:
        return float(round(self.get("/bench/route", model=model, n=20000)["us_per_request"], 2))

    def stop(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _rate(latencies: list[float], at: int) -> float:
    """Deploys per second around the ``at``-th (1-based): the last 10 POSTs up to it."""
    window = latencies[max(0, at - 10) : at]
    return round(len(window) / sum(window), 1)


def run_store(store: str, args: argparse.Namespace, health_port: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"aif-scale-{store}-") as work:
        url = _fresh_postgres(args.postgres_url) if store == "postgres" else ""
        plane = ControlPlaneProcess(Path(work), url, health_port)
        try:
            return _measure(plane, args)
        finally:
            plane.stop()


def _measure(plane: ControlPlaneProcess, args: argparse.Namespace) -> dict[str, Any]:
    services, replicas = args.services, args.replicas
    latencies = [plane.deploy(_name(1), replicas)]
    plane.wait_ready(replicas, 120)
    route_one = plane.route_us(f"{_name(1)}-model")
    log(f"1 service ready; routing {route_one} µs/request")
    deploy_started = time.monotonic()
    for index in range(2, services + 1):
        latencies.append(plane.deploy(_name(index), replicas))
        if index % 100 == 0:
            log(f"deployed {index}: {_rate(latencies, index)}/s; {plane.state()}")
    deploy_s = time.monotonic() - deploy_started
    steady_s = plane.wait_ready(services * replicas, STEADY_TIMEOUT_S)
    log(f"steady: {plane.state()} {steady_s}s after the last deploy")
    tick = plane.get("/bench/tick", n=5)
    lists = []
    for _ in range(10):
        started = time.perf_counter()
        listed = plane.get("/api/services")["services"]
        lists.append((time.perf_counter() - started) * 1000)
    assert len(listed) == services
    route_all = plane.route_us(f"{_name(services)}-model")
    cpu0, started = _cpu_s(plane.process.pid), time.monotonic()
    time.sleep(IDLE_S)
    idle_pct = 100 * (_cpu_s(plane.process.pid) - cpu0) / (time.monotonic() - started)
    return {
        "services": services,
        "replicas_per_service": replicas,
        "deploy_per_s": {str(at): _rate(latencies, at) for at in (1, 100, 1000) if at <= services},
        "deploy_all_s": round(deploy_s, 1),
        "steady_after_last_deploy_s": steady_s,
        "reconcile_pass_ms": round(tick["median_ms"], 1),
        "reconcile_passes_ms": [round(ms, 1) for ms in tick["ms"]],
        "list_services_ms": round(statistics.median(lists), 1),
        "route_us_1_service": route_one,
        "route_us_all_services": route_all,
        "idle_cpu_pct_of_core": round(idle_pct, 1),
        "rss_mib": _rss_mib(plane.process.pid),
    }


ROWS = [
    ("reconcile_pass_ms", f"one reconcile pass, steady fleet (ms; goal < {TICK_GOAL_MS:.0f})"),
    ("list_services_ms", f"GET /api/services (ms, median of 10; goal < {LIST_GOAL_MS:.0f})"),
    ("deploy_1", "deploys/s at the 1st service"),
    ("deploy_100", "deploys/s at the 100th service (last 10 POSTs)"),
    ("deploy_1000", "deploys/s at the 1,000th service (last 10 POSTs)"),
    ("steady_after_last_deploy_s", "every replica ready, after the last deploy (s)"),
    ("route_us_1_service", "routing, 1-service fleet (µs/request)"),
    ("route_us_all_services", "routing, whole fleet (µs/request)"),
    ("idle_cpu_pct_of_core", f"idle control plane CPU ({IDLE_S:.0f} s, % of a core)"),
    ("rss_mib", "control plane memory (RSS, MiB)"),
]


def _cell(result: dict[str, Any], key: str) -> str:
    if key.startswith("deploy_") and key != "deploy_all_s":
        value = result.get("deploy_per_s", {}).get(key.removeprefix("deploy_"))
    else:
        value = result.get(key)
    return "-" if value is None else f"{value}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args()
    stores = [s for s in args.stores.split(",") if s]
    health_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "minimal_upstream.py"), "--port", str(health_port)],
        stdout=subprocess.DEVNULL,
        preexec_fn=_die_with_us,
    )
    results: dict[str, Any] = {}
    try:
        for store in stores:
            log(f"{store}: {args.services} services x {args.replicas} replicas")
            try:
                results[store] = run_store(store, args, health_port)
            except BenchError as exc:
                log(f"{store}: {exc}")
                results[store] = {"error": str(exc)}
    finally:
        upstream.terminate()
        upstream.wait()
    print(f"\n| {args.services} services x {args.replicas} replicas | " + " | ".join(stores) + " |")
    print("|---|" + "---|" * len(stores))
    for key, label in ROWS:
        print(f"| {label} | " + " | ".join(_cell(results[s], key) for s in stores) + " |")
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "results": results,
    }
    RESULTS_FILE.write_text(json.dumps(document, indent=2))
    log(f"wrote {RESULTS_FILE}")


if __name__ == "__main__":
    main()
