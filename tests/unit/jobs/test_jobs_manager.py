"""The jobs facade against a fake runner: it knows runners only through ``JobRunner``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from aifactory.backends import (
    AllocationState,
    JobRunner,
    JobTask,
    KubernetesJobRunner,
    SlurmJobRunner,
    SubmittedJob,
)
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.config import load_settings
from aifactory.errors import BadRequest, NotFound
from aifactory.jobs import JobsManager
from aifactory.specs import Job, load_job
from aifactory.store import Store
from aifactory.tenancy import UsageLedger


class FakeRunner:
    """Runs nothing; its tasks are whatever the test sets."""

    name = "slurm"
    scheduler = "Fake"
    rendered_name = "job.fake"

    def __init__(self, cancel_deletes: bool = False, nodes: int = 1) -> None:
        self.cancel_deletes = cancel_deletes
        self.nodes = nodes
        self.states: list[JobTask] = []
        self.calls: list[str] = []
        self.tenant: tuple[str | None, ...] = ()

    def for_tenant(
        self, job: Job, account: str | None, partition: str | None, qos: str | None
    ) -> Job:
        self.tenant = (account, partition, qos)
        return job

    def render(self, job: Job, job_id: str, log_dir: Path, identity: object = None) -> str:
        return f"run {job.name} as {job_id} into {log_dir}\n"

    async def submit(self, job: Job, job_id: str, log_dir: Path, identity: object) -> str:
        self.calls.append("submit")
        return "h-1"

    async def tasks(self, job: SubmittedJob) -> list[JobTask]:
        self.calls.append(f"tasks {job.handle}")
        return list(self.states)

    def nodes_per_task(self, job: Job) -> int:
        return self.nodes

    async def keep_output(self, job: SubmittedJob, tasks: Sequence[JobTask]) -> None:
        self.calls.append(f"keep {len(tasks)}")

    async def logs(self, job: SubmittedJob, task: int | None, lines: int) -> str:
        return f"{job.handle} {job.known_tasks} {task} {lines}"

    async def cancel(self, job: SubmittedJob) -> None:
        self.calls.append(f"cancel {job.handle}")

    async def aclose(self) -> None:
        self.calls.append("aclose")


class Ledger:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def record(self, **entry: Any) -> None:
        self.entries.append(entry)


def task(state: AllocationState, index: int | None = None, **fields: Any) -> JobTask:
    return JobTask(index, "h-1", state, state.value.upper(), **fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_schema()
    yield store
    store.close()


def manager(tmp_path: Path, store: Store, runner: FakeRunner, ledger: Ledger) -> JobsManager:
    settings = load_settings(data_dir=tmp_path / "aifactory")
    runners = {"slurm": cast(JobRunner, runner)}
    return JobsManager(settings, store, "i1", cast(UsageLedger, ledger), runners)


def test_submit_renders_keeps_and_submits_through_the_runner(tmp_path: Path, store: Store) -> None:
    runner, ledger = FakeRunner(nodes=2), Ledger()
    tenant_id = store.ensure_tenant("physics")
    store.update_tenant("physics", slurm_account="phys", slurm_qos="normal")
    jobs = manager(tmp_path, store, runner, ledger)

    async def scenario() -> None:
        doc = {"name": "train", "command": ["true"], "nodes": 2, "resources": {"gpus": 1}}
        view = await jobs.submit(load_job(doc), tenant_id)
        assert runner.tenant == ("phys", None, "normal")
        assert view["slurm_job_id"] == "h-1"
        assert view["state"] == "unknown"  # the fake knows no tasks yet
        assert view["reason"] == "Fake no longer knows this job"
        script = Path(view["log_dir"]) / "job.fake"
        assert script.read_text().startswith(f"run train as {view['id']}")

    asyncio.run(scenario())
    assert ledger.entries == []  # unknown is not an end: asked again next time
    assert runner.calls == ["submit", "tasks h-1"]


def test_a_finished_job_is_charged_once_for_its_runners_nodes(tmp_path: Path, store: Store) -> None:
    runner, ledger = FakeRunner(nodes=2), Ledger()
    tenant_id = store.ensure_tenant("physics")
    jobs = manager(tmp_path, store, runner, ledger)
    runner.states = [task(AllocationState.RUNNING, started_at=100.0)]

    async def scenario() -> None:
        doc = {"name": "train", "command": ["true"], "nodes": 2, "resources": {"gpus": 1}}
        view = await jobs.submit(load_job(doc), tenant_id)
        assert view["state"] == "running"
        runner.states = [replace(runner.states[0], state=AllocationState.COMPLETED, ended_at=460.0)]
        assert (await jobs.describe(view["id"]))["state"] == "completed"
        assert (await jobs.describe(view["id"]))["state"] == "completed"  # not asked again

    asyncio.run(scenario())
    (entry,) = ledger.entries
    assert entry["seconds"] == 360.0
    assert entry["node_hours"] == pytest.approx(0.2)
    assert entry["gpu_hours"] == pytest.approx(0.2)
    assert runner.calls.count("keep 1") == 1


def test_cancel_asks_the_runner_only_while_the_job_runs(tmp_path: Path, store: Store) -> None:
    runner = FakeRunner()
    jobs = manager(tmp_path, store, runner, Ledger())
    runner.states = [task(AllocationState.RUNNING, started_at=1.0)]

    async def scenario() -> None:
        view = await jobs.submit(load_job({"name": "a", "command": ["true"]}), None)
        await jobs.cancel(view["id"])
        assert runner.calls[-2:] == ["cancel h-1", "tasks h-1"]
        runner.states = [task(AllocationState.CANCELLED, ended_at=2.0)]
        assert (await jobs.describe(view["id"]))["state"] == "cancelled"
        runner.calls.clear()
        await jobs.cancel(view["id"])
        assert runner.calls == []
        await jobs.stop()
        assert runner.calls == ["aclose"]

    asyncio.run(scenario())


def test_a_runner_whose_cancel_deletes_gets_the_job_recorded_first(
    tmp_path: Path, store: Store
) -> None:
    runner = FakeRunner(cancel_deletes=True)
    jobs = manager(tmp_path, store, runner, Ledger())
    runner.states = [task(AllocationState.RUNNING, 0, started_at=1.0)]

    async def scenario() -> None:
        doc = {"name": "a", "command": ["true"], "array": "0-1"}
        view = await jobs.submit(load_job(doc), None)
        runner.calls.clear()
        view = await jobs.cancel(view["id"])
        assert runner.calls == ["tasks h-1", "keep 1", "cancel h-1"]
        assert view["state"] == "cancelled"
        assert view["tasks"][0]["reason"] == "cancelled"
        runner.calls.clear()
        await jobs.cancel(view["id"])  # finished: delete what is left
        assert runner.calls == ["cancel h-1"]
        assert await jobs.logs(view["id"], lines=5) == "h-1 (0,) None 5"

    asyncio.run(scenario())


def test_the_runner_is_chosen_by_the_specs_backend_and_built_lazily(
    tmp_path: Path, store: Store
) -> None:
    settings = load_settings(data_dir=tmp_path / "aifactory")
    jobs = JobsManager(settings, store, "i1")
    assert isinstance(jobs.runner("slurm"), SlurmJobRunner)
    assert isinstance(jobs.runner("kubernetes"), KubernetesJobRunner)
    assert jobs.runner("slurm") is jobs.runner("slurm")
    script = jobs.render(load_job({"name": "a", "command": ["true"]}), "a-000000")
    assert f"#SBATCH --output={jobs.log_dir('a-000000')}/%j.log" in script
    manifests = jobs.render(load_job({"name": "a", "command": ["true"], "backend": "kubernetes"}))
    assert "kind: Job" in manifests


def _submitted(tmp_path: Path, **fields: Any) -> SubmittedJob:
    spec = load_job({"name": "a", "command": ["true"], **fields})
    return SubmittedJob("a-000000", "77", spec, tmp_path, (3, 1))


def test_slurm_logs_are_its_files_by_job_id_and_task(tmp_path: Path) -> None:
    runner = SlurmJobRunner("i1")
    (tmp_path / "77.log").write_text("one\ntwo\n")
    (tmp_path / "77_1.log").write_text("task 1\n")

    async def scenario() -> None:
        assert await runner.logs(_submitted(tmp_path), None, 1) == "two\n"
        with pytest.raises(BadRequest):
            await runner.logs(_submitted(tmp_path), 1, 1)
        array = _submitted(tmp_path, array="1-3")
        assert await runner.logs(array, None, 5) == "task 1\n"  # the first known task
        assert await runner.logs(array, 3, 5) == ""  # not written yet
        with pytest.raises(NotFound):
            await runner.logs(array, 2, 5)

    asyncio.run(scenario())


def test_kubernetes_logs_of_a_finished_job_are_its_kept_files(tmp_path: Path) -> None:
    runner = KubernetesJobRunner("i1", KubernetesConnection(kubeconfig="/nonexistent/kubeconfig"))
    for index in (0, 1):
        (tmp_path / f"{index}.log").write_text(f"node {index}\n")
    job = _submitted(tmp_path, backend="kubernetes", nodes=2)

    async def scenario() -> None:
        assert await runner.logs(job, None, 10) == "node 0\nnode 1\n"
        assert await runner.logs(job, None, 1) == "node 1\n"
        assert await runner.logs(job, 0, 10) == "node 0\n"
        with pytest.raises(NotFound):
            await runner.logs(job, 2, 10)
        with pytest.raises(BadRequest):
            await runner.logs(_submitted(tmp_path, backend="kubernetes"), 0, 10)

    asyncio.run(scenario())
