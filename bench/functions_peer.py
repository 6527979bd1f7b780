"""Peer side of bench/functions.py: Parsl or Dask, measured in their own venv.

Run by ``bench/functions.py`` with ``bench/.venv-peers/bin/python``, never
with aifactory's venv, so that neither framework leaks into it::

    bench/.venv-peers/bin/python bench/functions_peer.py --framework dask \\
        --workers 2 --tasks 10000 --latency-samples 500 --out result.json

Progress lines go to stdout; the frameworks' own chatter to stderr; the
results, as JSON, to ``--out``. CPU time is summed over this process and
every process it started (scheduler, interchange, workers).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

_T0 = time.monotonic()
_TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def noop(x: Any) -> Any:
    """The task: returns its argument, does nothing else."""
    return x


# --------------------------------------------------------------------------
# CPU time of this process and every process it started. This process is a
# child subreaper, so workers that a framework double-forks (Parsl's
# LocalProvider backgrounds them with ``&``) are reparented to it and stay in
# its tree; ``/proc/PID/environ`` cannot be used, setproctitle overwrites it.

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> list[int]:
    """Live (not zombie) descendants of ``root``, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            out.append(pid)
            todo.append(pid)
    return out


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def core_ticks() -> tuple[int, int]:
    """(busy, total) ticks over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def own_processes() -> dict[int, str]:
    """This process as ``client``, everything it started as ``framework``."""
    me = os.getpid()
    return {me: "client", **dict.fromkeys(descendants(me), "framework")}


@contextlib.contextmanager
def cpu_meter(
    tasks: Callable[[], int], groups: Callable[[], dict[int, str]] = own_processes
) -> Iterator[dict[str, Any]]:
    """CPU seconds per group of processes (``groups()``: pid -> name), per task.

    ``others_core_pct`` is what processes outside the groups used meanwhile,
    in % of one core: on a shared machine, the noise in the numbers.
    """
    labels = groups()
    before, busy0, wall0 = cpu_ticks(list(labels)), core_ticks(), time.monotonic()
    out: dict[str, Any] = {}
    yield out
    labels.update(groups())
    after, busy1, wall = cpu_ticks(list(labels)), core_ticks(), time.monotonic() - wall0
    per: dict[str, float] = {}
    for pid, t in after.items():  # a process that started meanwhile counts from zero
        per[labels[pid]] = per.get(labels[pid], 0.0) + (t - before.get(pid, 0)) / _TICK
    ours = sum(per.values())
    n = max(1, tasks())
    others = max(0.0, (busy1[0] - busy0[0]) / _TICK - ours)
    out.update(
        cpu_s={k: round(v, 3) for k, v in per.items()},
        cpu_us_per_task={
            **{k: round(v / n * 1e6, 1) for k, v in per.items()},
            "total": round(ours / n * 1e6, 1),
        },
        others_core_pct=round(100 * others / wall, 1) if wall else 0.0,
    )


# --------------------------------------------------------------------------
# the three measurements, shared by both frameworks


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def throughput(
    name: str,
    run_batch: Callable[[int], None],
    n_max: int,
    cell_s: float,
    groups: Callable[[], dict[int, str]] = own_processes,
) -> dict[str, Any]:
    """Time ``run_batch(n)`` (submit n no-ops, wait for every result).

    A probe of up to 500 tasks first (it also warms up) sizes ``n`` so that
    the measured batch takes about ``cell_s`` seconds at most.
    """
    probe = min(n_max, 500)
    t0 = time.perf_counter()
    run_batch(probe)
    probe_s = time.perf_counter() - t0
    n = min(n_max, max(probe, int(probe / probe_s * cell_s)))
    count = [n]
    with cpu_meter(lambda: count[0], groups) as cpu:
        t0 = time.perf_counter()
        run_batch(n)
        seconds = time.perf_counter() - t0
    rate = n / seconds
    log(f"{name}: {n} tasks in {seconds:.2f}s = {rate:,.0f} tasks/s (probe {probe / probe_s:,.0f})")
    return {
        "tasks": n,
        "seconds": round(seconds, 4),
        "tasks_per_s": round(rate, 1),
        "probe_tasks_per_s": round(probe / probe_s, 1),
        **cpu,
    }


def latency(
    name: str,
    one: Callable[[int], Any],
    samples: int,
    warmup: int,
    groups: Callable[[], dict[int, str]] = own_processes,
) -> dict[str, Any]:
    """One call at a time, ``one(i)`` = submit and wait for the result."""
    for i in range(warmup):
        one(i)
    times = []
    with cpu_meter(lambda: samples, groups) as cpu:
        for i in range(samples):
            t0 = time.perf_counter_ns()
            if one(i) != i:
                raise RuntimeError(f"{name}: wrong result")
            times.append((time.perf_counter_ns() - t0) / 1e6)
    out = {
        "samples": samples,
        "p50_ms": round(pct(times, 0.5), 3),
        "p90_ms": round(pct(times, 0.9), 3),
        "p99_ms": round(pct(times, 0.99), 3),
        "min_ms": round(min(times), 3),
        "max_ms": round(max(times), 3),
        **cpu,
    }
    log(f"{name}: p50 {out['p50_ms']:.3f} ms, p99 {out['p99_ms']:.3f} ms ({samples} samples)")
    return out


# --------------------------------------------------------------------------
# frameworks


def run_dask(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    log(f"dask: starting LocalCluster(n_workers={args.workers}, threads_per_worker=1)")
    t0 = time.monotonic()
    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(workdir),
        silence_logs=logging.ERROR,
    )
    try:
        client = Client(cluster)
        try:
            client.wait_for_workers(args.workers, timeout=60)
            startup = time.monotonic() - t0
            log(f"dask: {args.workers} workers up in {startup:.1f}s")

            def submit_batch(n: int) -> None:
                futures = [client.submit(noop, i, pure=False) for i in range(n)]
                results = client.gather(futures)
                if len(results) != n:
                    raise RuntimeError("dask: missing results")
                del futures

            def map_batch(n: int) -> None:
                futures = client.map(noop, range(n), pure=False)
                results = client.gather(futures)
                if len(results) != n:
                    raise RuntimeError("dask: missing results")
                del futures

            out: dict[str, Any] = {"startup_s": round(startup, 2)}
            out["submit"] = throughput("dask submit", submit_batch, args.tasks, args.cell_s)
            time.sleep(0.5)  # let the scheduler forget the last batch
            out["map"] = throughput("dask map", map_batch, args.tasks, args.cell_s)
            time.sleep(0.5)
            out["latency"] = latency(
                "dask latency",
                lambda i: client.submit(noop, i, pure=False).result(),
                args.latency_samples,
                args.warmup,
            )
            out["map_note"] = "Client.map(noop, range(n), pure=False), then Client.gather"
            return out
        finally:
            client.close()
    finally:
        cluster.close()


def run_parsl(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    htex = HighThroughputExecutor(
        label="htex",
        address="127.0.0.1",
        max_workers_per_node=args.workers,
        cores_per_worker=1,
        encrypted=False,  # loopback; aifactory does not encrypt either
        worker_logdir_root=str(workdir / "workers"),
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, nodes_per_block=1),
    )
    config = Config(
        executors=[htex],
        run_dir=str(workdir / "runinfo"),
        strategy="none",
        usage_tracking=0,
        # Parsl's default DEBUG log file costs the submitting process ~100 us per task.
        initialize_logging=False,
    )
    log(f"parsl: loading HighThroughputExecutor(max_workers_per_node={args.workers})")
    t0 = time.monotonic()
    parsl.load(config)
    try:
        app = parsl.python_app(noop, executors=["htex"])
        # The block starts asynchronously: the first call waits for its workers.
        if app(0).result(timeout=120) != 0:
            raise RuntimeError("parsl: wrong result")
        startup = time.monotonic() - t0
        log(f"parsl: block up and first task done in {startup:.1f}s")

        def submit_batch(n: int) -> None:
            futures = [app(i) for i in range(n)]
            _done, pending = concurrent.futures.wait(futures, timeout=300)
            if pending:
                raise RuntimeError(f"parsl: {len(pending)} tasks not done")
            for f in futures:
                f.result()

        out: dict[str, Any] = {"startup_s": round(startup, 2)}
        out["submit"] = throughput("parsl submit", submit_batch, args.tasks, args.cell_s)
        # Parsl has no map: the map cell is the same submit loop, measured again.
        out["map"] = throughput("parsl map (submit loop)", submit_batch, args.tasks, args.cell_s)
        out["latency"] = latency(
            "parsl latency", lambda i: app(i).result(), args.latency_samples, args.warmup
        )
        out["map_note"] = "Parsl has no map; a loop of app(i) calls, measured again"
        return out
    finally:
        parsl.dfk().cleanup()
        parsl.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("dask", "parsl"), required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--cell-s", type=float, default=20.0, help="longest measured batch")
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    # Parsl runs interchange.py and process_worker_pool.py from PATH: the venv's bin.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # SIGTERM unwinds through the frameworks' cleanup like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix=f"aif-bench-{args.framework}-") as tmp:
        run = run_dask if args.framework == "dask" else run_parsl
        package = "distributed" if args.framework == "dask" else "parsl"
        result: dict[str, Any] = {
            "framework": args.framework,
            "version": metadata.version(package),
            "python": platform.python_version(),
        }
        try:
            result.update(run(args, Path(tmp)))
        except KeyboardInterrupt:
            log(f"{args.framework}: interrupted")
            return 130
        except Exception as exc:  # reported to the caller, which goes on with the others
            log(f"{args.framework}: FAILED: {type(exc).__name__}: {exc}")
            result["error"] = f"{type(exc).__name__}: {exc}"
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
