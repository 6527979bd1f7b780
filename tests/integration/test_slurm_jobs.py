"""Batch jobs on the real Slurm cluster (deploy/slurm-dev-cluster.sh up): submit, follow, cancel.

Every test submits real jobs with ``sbatch`` and reads their real output; the
jobs facade is driven directly and, once, through the HTTP routes in-process.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory.config import load_settings
from aifactory.errors import BadRequest, NotFound
from aifactory.jobs import JobsManager
from aifactory.specs import load_job
from aifactory.store import Store
from aifactory.tenancy import Principal
from unix_users import make_traversable

from .jobs_http import jobs_client
from .slurm import needs_slurm

FINISHED = {"completed", "failed", "cancelled", "timeout", "unknown"}


pytestmark = [pytest.mark.slurm, needs_slurm]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[JobsManager]:
    # Jobs run as their identity (the workload user here), which must reach its folder.
    make_traversable(tmp_path)
    settings = load_settings(data_dir=tmp_path / "aifactory")
    store = Store(settings.effective_database_url)
    store.create_schema()
    jobs = JobsManager(settings, store, instance="test-" + uuid.uuid4().hex[:6])
    yield jobs
    # Leave nothing running on the shared cluster.
    for row in store.jobs(1000):
        if row.state not in FINISHED:
            subprocess.run(["scancel", row.handle], check=False, timeout=30)
    store.close()


async def _wait(
    manager: JobsManager, job_id: str, states: set[str] = FINISHED, timeout_s: float = 90
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        view = await manager.describe(job_id)
        if view["state"] in states:
            return view
        if loop.time() > deadline:
            raise AssertionError(f"job {job_id} never reached {states}: {view}")
        await asyncio.sleep(0.3)


def _submit_and_wait(manager: JobsManager, spec: dict[str, Any]) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        view = await manager.submit(load_job(spec), None)
        assert view["slurm_job_id"].isdigit()
        return await _wait(manager, view["id"])

    return asyncio.run(scenario())


def test_two_nodes_each_report_their_name(manager: JobsManager) -> None:
    view = _submit_and_wait(
        manager, {"name": "nodes", "command": ["printenv", "SLURMD_NODENAME"], "nodes": 2}
    )
    assert view["state"] == "completed", view
    assert view["exit_code"] == 0 and view["nodes"] == "n[1-2]"
    log = asyncio.run(manager.logs(view["id"]))
    assert sorted(log.split()) == ["n1", "n2"]
    script = (Path(view["log_dir"]) / "job.sh").read_text()
    assert "exec srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 printenv" in script


def test_array_tasks_each_have_their_own_log(manager: JobsManager) -> None:
    view = _submit_and_wait(
        manager,
        {
            "name": "array",
            "command": ["bash", "-c", 'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"'],
            "array": "0-2",
        },
    )
    assert view["state"] == "completed", view
    assert [(t["task"], t["state"], t["exit_code"]) for t in view["tasks"]] == [
        (0, "completed", 0),
        (1, "completed", 0),
        (2, "completed", 0),
    ]
    logs = [asyncio.run(manager.logs(view["id"], task)) for task in (0, 1, 2)]
    assert logs == [f"task {n} of {view['slurm_job_id']}\n" for n in (0, 1, 2)]
    assert asyncio.run(manager.logs(view["id"])) == logs[0]
    with pytest.raises(NotFound):
        asyncio.run(manager.logs(view["id"], 7))


def test_failing_job_reports_its_exit_code(manager: JobsManager) -> None:
    view = _submit_and_wait(manager, {"name": "fails", "command": "bash -c 'echo bye; exit 3'"})
    assert (view["state"], view["exit_code"]) == ("failed", 3), view
    assert view["tasks"][0]["reason"] == "exited with a non-zero code"
    assert asyncio.run(manager.logs("fails")) == "bye\n"  # by name: the newest such job


def test_failing_array_task_makes_the_job_fail(manager: JobsManager) -> None:
    view = _submit_and_wait(
        manager,
        {"name": "mixed", "command": ["bash", "-c", "exit $SLURM_ARRAY_TASK_ID"], "array": "0,2"},
    )
    assert (view["state"], view["exit_code"]) == ("failed", 2), view
    assert [(t["task"], t["exit_code"]) for t in view["tasks"]] == [(0, 0), (2, 2)]


def test_cancel_a_running_job(manager: JobsManager) -> None:
    async def scenario() -> dict[str, Any]:
        view = await manager.submit(load_job({"name": "sleeper", "command": "sleep 300"}), None)
        running = await _wait(manager, view["id"], {"running"})
        assert running["started_at"] and running["nodes"]
        await manager.cancel(view["id"])
        return await _wait(manager, view["id"], timeout_s=60)

    view = asyncio.run(scenario())
    assert view["state"] == "cancelled", view
    assert view["tasks"][0]["slurm_state"] == "CANCELLED" and view["ended_at"]
    # Cancelling again is harmless; the job stays as it ended.
    assert asyncio.run(manager.cancel(view["id"]))["state"] == "cancelled"


def test_hostile_values_stay_inert_when_submitted(manager: JobsManager, tmp_path: Path) -> None:
    marker = Path(f"/tmp/aif-pwned-{uuid.uuid4().hex[:8]}")
    hostile = [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"x\n#SBATCH --job-name=pwned\ntouch {marker}",
        f"' ; touch {marker} ; '",
    ]
    workdir = tmp_path / f"dir; touch {marker.name} $(touch {marker.name})"
    workdir.mkdir()
    view = _submit_and_wait(
        manager,
        {
            "name": "hostile",
            "command": ["sh", "-c", 'printf "[%s]\\n" "$@" "$EVIL" "$PWD"', "sh", *hostile],
            "env": {"EVIL": f"$(touch {marker})\n#SBATCH --uid=0"},
            "workdir": str(workdir),
        },
    )
    assert view["state"] == "completed", view
    log = asyncio.run(manager.logs(view["id"]))
    for value in [*hostile, f"$(touch {marker})\n#SBATCH --uid=0", str(workdir)]:
        assert f"[{value}]" in log
    assert not marker.exists()
    assert not list(tmp_path.rglob(marker.name)) and not Path(marker.name).exists()
    name = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--jobs={view['slurm_job_id']}", "--format=%j"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "aif-job-hostile" in name


def test_sbatch_refusal_is_a_bad_request(manager: JobsManager) -> None:
    job = load_job({"name": "nowhere", "command": ["true"], "slurm": {"partition": "nosuch"}})
    with pytest.raises(BadRequest, match="partition"):
        asyncio.run(manager.submit(job, None))


def test_http_routes(manager: JobsManager) -> None:
    principal = Principal(
        key_id=1, tenant_id=manager.store.ensure_tenant("physics"), tenant="physics", role="admin"
    )

    async def scenario() -> None:
        async with jobs_client(manager, principal) as http:
            spec = (
                "kind: Job\nname: web\narray: 0-1\n"
                "command: [bash, -c, 'echo hi from $SLURM_ARRAY_TASK_ID']\n"
            )
            dry = await http.post("/api/jobs", content=spec, params={"dry_run": "1"})
            assert dry.status_code == 200 and "#SBATCH --array=0-1" in dry.text
            created = await http.post("/api/jobs", content=spec)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            for _ in range(300):
                shown = (await http.get(f"/api/jobs/{job_id}")).json()
                if shown["state"] in FINISHED:
                    break
                await asyncio.sleep(0.3)
            assert shown["state"] == "completed" and len(shown["tasks"]) == 2
            log = await http.get(f"/api/jobs/{job_id}/logs", params={"task": 1, "lines": 5})
            assert log.text == "hi from 1\n"
            listed = (await http.get("/api/jobs")).json()["jobs"]
            assert [j["id"] for j in listed] == [job_id]
            cancelled = await http.delete(f"/api/jobs/{job_id}")
            assert cancelled.status_code == 202 and cancelled.json()["state"] == "completed"
            bad = await http.post("/api/jobs", content="kind: Job\nname: x\ncommand: []\n")
            assert bad.status_code == 400 and "command" in bad.json()["error"]["message"]
            missing = await http.get("/api/jobs/nosuch")
            assert missing.status_code == 404
            bad_task = await http.get(f"/api/jobs/{job_id}/logs", params={"task": "x"})
            assert bad_task.status_code == 400

    asyncio.run(scenario())
    [row] = manager.store.jobs()
    assert row.tenant_id == principal.tenant_id
