"""Serverless functions: aifactory vs Parsl vs Dask, on one machine, in one run.

Every framework gets the same two worker processes and the same no-op task
(``noop(x) -> x``, defined in the submitting script, so each one ships it by
value the way a user's function travels):

* aifactory: ``python -m aifactory.functions.broker`` plus one
  ``python -m aifactory.functions.worker --processes 2 --prefetch K`` and an
  in-process ``aifactory.functions.Executor``, over CurveZMQ as under
  ``aifactory up`` (``--plain``: in clear, like the peers);
* Parsl: ``HighThroughputExecutor`` (``max_workers_per_node=2``, unencrypted
  on loopback, DFK logging off) with a ``LocalProvider`` block;
* Dask: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``.

Measured for each: throughput of ``submit`` (N no-ops submitted, then every
result awaited), the same through ``map`` (Parsl has none: a submit loop
again), and the warm round trip of one ``submit(f).result()`` at a time.
A 500-task probe sizes each throughput batch to at most ``--cell-s`` seconds.

Parsl and Dask run in their own venv, ``bench/.venv-peers`` (created with
pip when missing), through ``bench/functions_peer.py``::

    .venv/bin/python bench/functions.py [--tasks N] [--skip-peers]

Results: a markdown table on stdout and ``bench/results/functions.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from functions_peer import (
    _PR_SET_CHILD_SUBREAPER,
    _PR_SET_PDEATHSIG,
    _prctl,
    cpu_meter,
    descendants,
    latency,
    throughput,
)

BENCH_DIR = Path(__file__).resolve().parent
PEER_SCRIPT = BENCH_DIR / "functions_peer.py"
PEERS_VENV = BENCH_DIR / ".venv-peers"
RESULTS_FILE = BENCH_DIR / "results" / "functions.json"
LOGS_DIR = BENCH_DIR / "results" / "logs" / "functions"

FRAMEWORKS = ("aifactory", "parsl", "dask")
PEERS = ("parsl", "dask")
POOL = "bench"
RPS_GOAL = 2.0
P50_GOAL_MS = 1.0
PEER_TIMEOUT_S = 240
_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


def noop(x: Any) -> Any:
    """The task: returns its argument, does nothing else."""
    return x


# --------------------------------------------------------------------------
# processes: this process is a child subreaper, so everything the benchmark
# starts, however deep, stays in its tree and is killed on the way out


def _child_setup() -> None:
    # Die with the benchmark even if it is killed with -9.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """Child processes, each in its own session, stopped in reverse order."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        stdout_pipe: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else out,
                stderr=out,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        """SIGTERM its process group, then SIGKILL whatever is left of its tree."""
        tree = descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

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
        killed = [name for name, proc in self._procs if proc.poll() is None]
        for _name, proc in self._procs:
            self.stop(proc, grace_s=0)
        self._procs.clear()
        # Orphans reparented to us (workers a framework double-forked).
        for pid in descendants(os.getpid()):
            killed.append(f"pid {pid}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap()
        return killed


def _reap() -> None:
    """Collect zombies of orphans that the subreaper inherited."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _read_line(stream: IO[bytes], proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise BenchError(f"no output after {timeout_s:.0f}s")
    line = stream.readline()
    if not line:
        raise BenchError(f"exited with code {proc.wait(5)} before printing anything")
    return line.decode(errors="replace").strip()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# aifactory


def measure_aifactory(
    args: argparse.Namespace, children: Children, workdir: Path
) -> dict[str, Any]:
    from aifactory.functions import Executor

    broker_log, worker_log = workdir / "broker.log", workdir / "worker.log"
    broker = children.start(
        "broker",
        [sys.executable, "-m", "aifactory.functions.broker", *(["--plain"] if args.plain else [])],
        log_path=broker_log,
        stdout_pipe=True,
    )
    assert broker.stdout is not None
    try:
        addresses = json.loads(_read_line(broker.stdout, broker, 30))
    except (BenchError, ValueError) as exc:
        raise BenchError(f"broker: {exc}\n{tail(broker_log)}") from exc
    argv = [
        sys.executable, "-m", "aifactory.functions.worker",
        "--broker", addresses["worker_address"], "--pool", POOL,
        "--processes", str(args.workers), "--prefetch", str(args.prefetch),
        "--log-level", "WARNING",
    ]  # fmt: skip
    server_key = addresses["server_key"]
    if server_key:
        argv.append(f"--broker-key={server_key}")  # a Z85 key may begin with "-"
    t0 = time.monotonic()
    worker = children.start("worker", argv, log_path=worker_log)
    log(
        f"aifactory: broker at {addresses['client_address']} (pid {broker.pid}); worker pid "
        f"{worker.pid}, --processes {args.workers} --prefetch {args.prefetch}"
    )
    me = os.getpid()

    def groups() -> dict[int, str]:
        labels = {me: "client", broker.pid: "broker", worker.pid: "worker manager"}
        labels.update(dict.fromkeys(descendants(worker.pid), "task processes"))
        return labels

    ex = Executor(addresses["client_address"], pool=POOL, server_key=server_key)
    try:
        # The task processes are spawned: wait until both answer.
        first = [ex.submit(noop, i) for i in range(args.workers * 2)]
        done, _pending = concurrent.futures.wait(first, timeout=60)
        if len(done) != len(first) or worker.poll() is not None:
            raise BenchError(f"worker not ready after 60s:\n{tail(worker_log)}")
        startup = time.monotonic() - t0
        log(f"aifactory: worker up and first tasks done in {startup:.1f}s")

        def check(results: list[Any], n: int) -> None:
            if results != list(range(n)):
                raise BenchError("aifactory: wrong or missing results")

        def submit_batch(n: int) -> None:
            futures = [ex.submit(noop, i) for i in range(n)]
            check([f.result(timeout=120) for f in futures], n)

        def map_batch(n: int) -> None:
            check(list(ex.map(noop, range(n), timeout=120)), n)

        def map_chunked(n: int) -> None:
            check(list(ex.map(noop, range(n), timeout=120, chunksize=args.chunksize)), n)

        out: dict[str, Any] = {
            "version": metadata.version("aifactory"),
            "startup_s": round(startup, 2),
            "prefetch": args.prefetch,
            "curve": bool(server_key),
        }
        n, cell = args.tasks, args.cell_s
        out["submit"] = throughput("aifactory submit", submit_batch, n, cell, groups)
        out["map"] = throughput("aifactory map", map_batch, n, cell, groups)
        out["map_chunked"] = throughput(
            f"aifactory map chunksize={args.chunksize}", map_chunked, n, cell, groups
        )
        out["map_chunked"]["chunksize"] = args.chunksize
        out["latency"] = latency(
            "aifactory latency",
            lambda i: ex.submit(noop, i).result(timeout=30),
            args.latency_samples,
            args.warmup,
            groups,
        )
        out["map_note"] = "Executor.map(noop, range(n)), chunksize=1"
        return out
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        children.stop(worker)
        children.stop(broker)
        for path in (broker_log, worker_log):
            problems = [ln for ln in tail(path, 200).splitlines() if "Traceback" in ln]
            if problems:
                log(f"aifactory: {path.name} has tracebacks:\n{tail(path)}")


# --------------------------------------------------------------------------
# peers, in their own venv


def ensure_peers() -> Path:
    python = PEERS_VENV / "bin" / "python"
    if PEERS_VENV.is_dir():
        # As Python 3.13's venv does: keeps git and `ruff check bench` out of the venv.
        (PEERS_VENV / ".gitignore").write_text("*\n")
    check = [str(python), "-c", "import parsl, distributed"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    log(f"peers: installing parsl and dask[distributed] into {PEERS_VENV} (a few minutes)")
    install_log = BENCH_DIR / "results" / "functions-peers-install.log"
    install_log.parent.mkdir(parents=True, exist_ok=True)
    with install_log.open("wb") as out:
        for argv in (
            [sys.executable, "-m", "venv", str(PEERS_VENV)],
            [str(PEERS_VENV / "bin" / "pip"), "install", "-q", "parsl", "dask[distributed]"],
        ):
            code = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800
            ).returncode
            if code != 0:
                raise BenchError(f"{argv[0]} failed ({code}); see {install_log}")
            (PEERS_VENV / ".gitignore").write_text("*\n")
    if subprocess.run(check, capture_output=True).returncode != 0:
        raise BenchError(f"parsl/dask installed but not importable; see {install_log}")
    return python


def measure_peer(
    name: str, python: Path, args: argparse.Namespace, children: Children, workdir: Path
) -> dict[str, Any]:
    out_path, log_path = workdir / f"{name}.json", workdir / f"{name}.log"
    argv = [
        str(python), str(PEER_SCRIPT), "--framework", name,
        "--workers", str(args.workers), "--tasks", str(args.tasks),
        "--cell-s", str(args.cell_s), "--latency-samples", str(args.latency_samples),
        "--warmup", str(args.warmup), "--out", str(out_path),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = children.start(name, argv, log_path=log_path, stdout_pipe=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + PEER_TIMEOUT_S
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"still running after {PEER_TIMEOUT_S}s")
            try:
                line = _read_line(proc.stdout, proc, left)
            except BenchError:
                if proc.poll() is not None:
                    break
                raise
            print(f"    {name} | {line}", flush=True)
    except BenchError as exc:
        raise BenchError(f"{name}: {exc}\n{tail(log_path)}") from exc
    finally:
        children.stop(proc)
        _reap()
    try:
        result: dict[str, Any] = json.loads(out_path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{name}: no results ({exc})\n{tail(log_path)}") from exc
    if "error" in result:
        raise BenchError(f"{name}: {result['error']}\n{tail(log_path)}")
    return result


# --------------------------------------------------------------------------
# report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _get(data: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def report(results: dict[str, Any]) -> dict[str, Any]:
    fw = results["frameworks"]
    rows = [
        ("submit throughput (tasks/s)", ("submit", "tasks_per_s"), 0),
        ("map throughput (tasks/s)", ("map", "tasks_per_s"), 0),
        ("round trip p50 (ms)", ("latency", "p50_ms"), 3),
        ("round trip p99 (ms)", ("latency", "p99_ms"), 3),
        ("CPU per task, submit (us, all processes)", ("submit", "cpu_us_per_task", "total"), 0),
        ("tasks measured, submit / map", None, 0),
        ("other processes' CPU, submit (% of a core)", ("submit", "others_core_pct"), 0),
        ("startup (s)", ("startup_s",), 1),
    ]
    names = [n for n in FRAMEWORKS if n in fw]
    heads = [f"{n} {fw[n].get('version', '')}".strip() for n in names]
    lines = ["| | " + " | ".join(heads) + " |", "|---" * (len(names) + 1) + "|"]
    for label, keys, digits in rows:
        cells = []
        for n in names:
            if "error" in fw[n]:
                cells.append("FAILED")
            elif keys is None:
                cells.append(f"{_get(fw[n], 'submit', 'tasks')} / {_get(fw[n], 'map', 'tasks')}")
            else:
                cells.append(_fmt(_get(fw[n], *keys), digits))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    aif = fw.get("aifactory", {})
    ratios: dict[str, Any] = {}
    for kind in ("submit", "map"):
        mine = _get(aif, kind, "tasks_per_s")
        peers = {n: _get(fw.get(n), kind, "tasks_per_s") for n in PEERS}
        peers = {n: v for n, v in peers.items() if v}
        if mine and peers:
            best = max(peers, key=lambda n: peers[n])
            ratios[f"{kind}_throughput_vs_best_peer"] = {
                "ratio": round(mine / peers[best], 2),
                "best_peer": best,
                "goal": RPS_GOAL,
                "meets": mine / peers[best] >= RPS_GOAL,
            }
    p50 = _get(aif, "latency", "p50_ms")
    if p50 is not None:
        ratios["p50_ms"] = {"value": p50, "goal_below": P50_GOAL_MS, "meets": p50 < P50_GOAL_MS}

    out = ["", "## Serverless functions: no-op tasks, 2 worker processes each", "", *lines, ""]
    chunked = _get(aif, "map_chunked")
    if chunked:
        out.append(
            f"aifactory map with chunksize={chunked['chunksize']} (not compared, the peers "
            f"have no equivalent): {_fmt(chunked['tasks_per_s'], 0)} tasks/s."
        )
    breakdown = _get(aif, "submit", "cpu_us_per_task")
    if breakdown:
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in breakdown.items() if k != "total")
        out.append(f"aifactory CPU per task during submit (us): {parts}.")
    cfg = results["config"]
    out.append(
        f"Throughput: up to {cfg['tasks']} no-op tasks per batch, submitted then all results "
        f"awaited, after a 500-task probe that sizes the batch to <= {cfg['cell_s']:g}s; "
        "Parsl's map row is its submit loop again (Parsl has no map)."
    )
    out.append(
        f"Round trip: {cfg['latency_samples']} sequential submit(noop, i).result() after "
        f"{cfg['warmup']} warm-up calls. All processes share {cfg['cpus']} cores; no pinning."
    )
    if ratios:
        out.append("")
        out.append("Goals:")
        for kind in ("submit", "map"):
            r = ratios.get(f"{kind}_throughput_vs_best_peer")
            if r:
                ok = "meets" if r["meets"] else "MISSES"
                out.append(
                    f"- {kind} throughput, aifactory / {r['best_peer']}: {r['ratio']:.2f}x "
                    f"(goal >= {RPS_GOAL:g}x: {ok})"
                )
        r = ratios.get("p50_ms")
        if r:
            ok = "meets" if r["meets"] else "MISSES"
            out.append(f"- aifactory round trip p50: {r['value']:.3f} ms (goal < 1 ms: {ok})")
    noisy = [
        n
        for n in names
        if max(_get(fw[n], k, "others_core_pct") or 0 for k in ("submit", "map", "latency")) > 20
    ]
    if noisy:
        out.append("")
        out.append(
            "WARNING: other processes used over 20% of a core while measuring "
            f"{', '.join(noisy)}; the machine was not idle, expect noisy numbers."
        )
    print("\n".join(out), flush=True)
    return ratios


# --------------------------------------------------------------------------


def run(args: argparse.Namespace, children: Children, workdir: Path) -> int:
    results: dict[str, Any] = {
        "config": {
            "tasks": args.tasks,
            "cell_s": args.cell_s,
            "workers": args.workers,
            "latency_samples": args.latency_samples,
            "warmup": args.warmup,
            "aifactory_prefetch": args.prefetch,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "frameworks": {},
    }
    with cpu_meter(lambda: 1, dict) as idle:
        time.sleep(1.0)
    others = idle["others_core_pct"]
    results["config"]["others_core_pct_before"] = others
    log(f"CPU used by other processes before starting: {others:.0f}% of a core")
    if others > 15:
        log("WARNING: the machine is not idle; expect noisy numbers")

    fw = results["frameworks"]
    try:
        fw["aifactory"] = measure_aifactory(args, children, workdir)
    except BenchError as exc:
        log(f"aifactory: FAILED: {exc}")
        fw["aifactory"] = {"error": str(exc)}
    if not args.skip_peers:
        python = ensure_peers()
        for name in PEERS:
            log(f"{name}: running bench/functions_peer.py in {PEERS_VENV.name}")
            try:
                fw[name] = measure_peer(name, python, args, children, workdir)
            except BenchError as exc:
                log(f"{name}: FAILED: {exc}")
                fw[name] = {"error": str(exc)}

    results["goals"] = report(results)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON results: {RESULTS_FILE}")
    return 1 if any("error" in d for d in fw.values()) else 0


def keep_logs(workdir: Path) -> None:
    with contextlib.suppress(OSError):
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        for path in workdir.glob("*.log"):
            (LOGS_DIR / path.name).write_bytes(path.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Compare no-op task throughput and latency: aifactory, Parsl, Dask."
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per batch (max)")
    parser.add_argument(
        "--cell-s", type=float, default=20.0, help="longest measured batch, seconds (default 20)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50, help="calls before the latency samples")
    parser.add_argument(
        "--prefetch", type=int, default=64, help="aifactory worker --prefetch (default 64)"
    )
    parser.add_argument(
        "--chunksize", type=int, default=100, help="chunksize of the extra aifactory map run"
    )
    parser.add_argument("--skip-peers", action="store_true", help="measure only aifactory")
    parser.add_argument(
        "--plain", action="store_true", help="aifactory's broker without CurveZMQ encryption"
    )
    args = parser.parse_args()
    if not (
        500 <= args.tasks <= 1_000_000
        and 1 <= args.cell_s <= 60
        and 1 <= args.workers <= 64
        and 10 <= args.latency_samples <= 100_000
        and args.warmup >= 0
        and args.prefetch >= 0
        and args.chunksize >= 1
    ):
        parser.error(
            "--tasks must be 500-1000000, --cell-s 1-60, --workers 1-64, "
            "--latency-samples 10-100000, --warmup/--prefetch >= 0, --chunksize >= 1"
        )

    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    children = Children()
    code = 1
    with tempfile.TemporaryDirectory(prefix="aif-bench-functions-") as tmp:
        workdir = Path(tmp)
        try:
            code = run(args, children, workdir)
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
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
