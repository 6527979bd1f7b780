"""The batch-jobs facade: what the admin API and the CLI may ask about jobs.

A job runs where its spec's ``backend`` says: on Slurm (``SlurmJobRunner``)
or on Kubernetes as a set of batch/v1 Jobs (``KubernetesJobRunner``, built
on first use). States are refreshed from the scheduler when asked (on
read), and by a slow sweep (every ``_SWEEP_S``) so that every finished job
reaches the usage ledger: a job that is still pending or running is looked
up each time, and its last known state is kept in the store, so a finished
job is still described after the scheduler forgot it. A Slurm job runs
under its tenant's Slurm account (the spec cannot name another) and their
partition and QOS defaults::

    submit(job)   -> render script -> sbatch        -> jobs row (pending)
                     render Jobs   -> create them
    describe(id)  -> squeue / list Jobs and pods (unfinished only) -> per-task states
    logs(id)      -> DATA_DIR/logs/jobs/ID/<slurm id>[_<task>].log
                     Kubernetes: the pods' logs, kept in ID/<index>.log once finished
    cancel(id)    -> scancel -> describe
                     Kubernetes: record as cancelled, keep the logs, delete the Jobs

The store's ``slurm_job_id`` holds a Kubernetes job's set name.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory.backends import AllocationState, JobTask, SiteDefaults, SlurmJobRunner
from aifactory.config import Settings
from aifactory.errors import BackendError, BadRequest, ConfigError, NotFound
from aifactory.jobs.script import JobScriptContext, render_batch_script
from aifactory.specs import Job, load_job
from aifactory.store import JobRow, Store
from aifactory.tenancy import UsageLedger

if TYPE_CHECKING:
    from aifactory.backends import KubernetesJobRunner

logger = logging.getLogger(__name__)

_SWEEP_S = 15.0
# How much of each finished Kubernetes task's output is kept (the API's `lines` cap).
_KEPT_LINES = 100_000

_FINISHED = {s.value for s in AllocationState if s.finished}
# How the states of several tasks add up to the job's, most telling first.
_ENDINGS = (
    AllocationState.CANCELLED,
    AllocationState.PREEMPTED,
    AllocationState.TIMEOUT,
    AllocationState.FAILED,
    AllocationState.UNKNOWN,
)


class JobsManager:
    """Submit, describe, read the logs of and cancel batch jobs.

    Args:
        settings: Data directory, Slurm site defaults and command timeout,
            Kubernetes namespace, image and client configuration.
        store: Where jobs are recorded.
        instance: This control plane's id (tags its Slurm jobs and Kubernetes Jobs).
        runner: The Slurm driver; built from the settings when not given.
        ledger: Where finished jobs' node- and GPU-hours are charged.
        kubernetes: The Kubernetes driver; built from the settings on first use
            when not given.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        instance: str,
        runner: SlurmJobRunner | None = None,
        ledger: UsageLedger | None = None,
        kubernetes: KubernetesJobRunner | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._instance = instance
        self._ledger = ledger
        self._kubernetes = kubernetes
        self._sweeper: asyncio.Task[None] | None = None
        self.runner = runner or SlurmJobRunner(instance, settings.slurm_command_timeout_s)
        self.site = SiteDefaults(
            partition=settings.slurm_partition or None,
            account=settings.slurm_account or None,
            qos=settings.slurm_qos or None,
            preamble=settings.slurm_preamble,
        )

    @property
    def kubernetes(self) -> KubernetesJobRunner:
        """The Kubernetes driver (importing the Kubernetes client on first use)."""
        if self._kubernetes is None:
            from aifactory.backends import KubernetesJobRunner

            settings = self.settings
            self._kubernetes = KubernetesJobRunner(
                self._instance,
                namespace=settings.kubernetes_namespace,
                image=settings.kubernetes_image,
                kubeconfig=settings.kubeconfig,
                host_paths=settings.kubernetes_host_paths,
            )
        return self._kubernetes

    def log_dir(self, job_id: str) -> Path:
        """Where a job's output files go."""
        return self.settings.logs_dir / "jobs" / job_id

    def render(self, job: Job, job_id: str = "") -> str:
        """The batch script (Slurm) or Job manifests (Kubernetes) ``submit`` would send.

        Raises:
            BackendError: when a value could not be rendered safely.
        """
        job_id = job_id or f"{job.name}-XXXXXX"
        if job.backend == "kubernetes":
            return self.kubernetes.render(job, job_id)
        context = JobScriptContext(job_id, self.runner.tag(job_id), self.log_dir(job_id), self.site)
        return render_batch_script(job, context)

    async def submit(self, job: Job, tenant_id: int | None) -> dict[str, Any]:
        """Submit ``job``; return its view (state ``pending``).

        Raises:
            BadRequest: the job could not be rendered, or the scheduler refused it.
        """
        kubernetes = job.backend == "kubernetes"
        if not kubernetes:
            job = await asyncio.to_thread(self._with_tenant_defaults, job, tenant_id)
        job_id = f"{job.name}-{secrets.token_hex(3)}"
        log_dir = self.log_dir(job_id)
        try:
            text = self.render(job, job_id)
            name = "job.yaml" if kubernetes else "job.sh"
            await asyncio.to_thread(_write_text, log_dir / name, text)
            if kubernetes:
                slurm_id = await self.kubernetes.submit(job, job_id)
            else:
                slurm_id = await self.runner.submit(text)
        except (BackendError, ConfigError) as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        await asyncio.to_thread(
            self.store.add_job,
            id=job_id,
            name=job.name,
            spec=job.to_document(),
            backend=job.backend,
            slurm_job_id=slurm_id,
            state=AllocationState.PENDING.value,
            log_dir=str(log_dir),
            tenant_id=tenant_id,
        )
        logger.info("job %s: submitted as %s job %s", job_id, job.backend, slurm_id)
        return await self.describe(job_id)

    def _with_tenant_defaults(self, job: Job, tenant_id: int | None) -> Job:
        tenant = next((t for t in self.store.tenants() if t.id == tenant_id), None)
        if tenant is None:
            return job
        slurm = job.slurm.for_tenant(tenant.slurm_account, tenant.slurm_partition, tenant.slurm_qos)
        return job.model_copy(update={"slurm": slurm})

    async def start(self) -> None:
        """Start the sweep that brings unfinished jobs' states (and usage) in."""
        self._sweeper = asyncio.create_task(self._sweep(), name="jobs-sweep")

    async def stop(self) -> None:
        """Stop the sweep; close the Kubernetes client."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._kubernetes is not None:
            await self._kubernetes.aclose()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                rows = await asyncio.to_thread(self.store.jobs, 1000)
                await asyncio.gather(*(self._refresh(r) for r in rows if r.state not in _FINISHED))
            except Exception:
                logger.exception("refreshing jobs failed; retrying")

    async def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest jobs, newest first, with fresh states for unfinished ones."""
        rows = await asyncio.to_thread(self.store.jobs, limit)
        fresh = await asyncio.gather(*(self._refresh(row) for row in rows))
        return [_view(row) for row in fresh]

    async def describe(self, id_or_name: str) -> dict[str, Any]:
        """One job (by id, or the newest of that name) with each task's state.

        Raises:
            NotFound: no such job.
        """
        row = await self._refresh(await self._find(id_or_name))
        return _view(row)

    async def logs(self, id_or_name: str, task: int | None = None, lines: int = 200) -> str:
        """The last lines of a job's output (of one array task: the first by default).

        Raises:
            NotFound: no such job or task.
            BadRequest: a task asked of a job that is not an array.
        """
        row = await self._refresh(await self._find(id_or_name))
        if row.backend == "kubernetes":
            return await self._kubernetes_logs(row, task, lines)
        array = bool(row.spec.get("array"))
        if not array:
            if task is not None:
                raise BadRequest(f"job {row.id} is not an array; leave out `task`.", param="task")
            name = f"{row.slurm_job_id}.log"
        else:
            known = sorted(n for t in row.tasks if isinstance(n := t.get("task"), int))
            if task is None:
                if not known:
                    return ""
                task = known[0]
            elif known and task not in known:
                raise NotFound(
                    f"job {row.id} has no array task {task}.",
                    fix=f"use one of: {', '.join(str(k) for k in known)}",
                )
            name = f"{row.slurm_job_id}_{task}.log"
        return await asyncio.to_thread(_tail, Path(row.log_dir) / name, lines)

    async def _kubernetes_logs(self, row: JobRow, task: int | None, lines: int) -> str:
        """A Kubernetes job's output: kept files once finished, else the pods' logs.

        Without ``task``: an array's first task, every node of a multi-node
        job one after the other (as Slurm writes them to one file).
        """
        job = load_job(dict(row.spec), row.id)
        indexes = job.task_indexes
        if task is None:
            chosen = indexes[:1] if job.array else indexes
        elif not job.array and job.nodes == 1:
            raise BadRequest(f"job {row.id} has one task; leave out `task`.", param="task")
        elif task not in indexes:
            raise NotFound(
                f"job {row.id} has no task {task}.",
                fix=f"use one of: {', '.join(str(i) for i in indexes[:20])}",
            )
        else:
            chosen = [task]
        texts = []
        for index in chosen:
            kept = Path(row.log_dir) / f"{index}.log"
            if await asyncio.to_thread(kept.exists):
                texts.append(await asyncio.to_thread(_tail, kept, lines))
            else:
                texts.append(await self.kubernetes.logs(row.slurm_job_id, index, lines))
        return "".join("".join(texts).splitlines(keepends=True)[-lines:])

    async def cancel(self, id_or_name: str) -> dict[str, Any]:
        """Cancel a job (all its tasks); a finished job stays as it ended.

        On Kubernetes the job is recorded as cancelled and its output kept
        before its Jobs and pods are deleted; cancelling a finished
        Kubernetes job deletes what is left of it in the cluster.

        Raises:
            NotFound: no such job.
            BackendError: the Kubernetes API did not answer or refused.
        """
        row = await self._find(id_or_name)
        if row.backend == "kubernetes":
            if row.state not in _FINISHED:
                tasks = await self._tasks(row)
                await self._record(row, [t.cancelled(time.time()) for t in tasks])
            await self.kubernetes.cancel(row.slurm_job_id)
        elif row.state not in _FINISHED:
            await self.runner.cancel(row.slurm_job_id)
            logger.info("job %s: cancel requested (Slurm job %s)", row.id, row.slurm_job_id)
        return await self.describe(row.id)

    async def _find(self, id_or_name: str) -> JobRow:
        row = await asyncio.to_thread(self.store.job, id_or_name)
        if row is None:
            row = await asyncio.to_thread(self.store.newest_job, id_or_name)
        if row is None:
            raise NotFound(f"job {id_or_name!r} does not exist.", fix="see `aifactory jobs ls`")
        return row

    async def _refresh(self, row: JobRow) -> JobRow:
        if row.state in _FINISHED or not row.slurm_job_id:
            return row
        try:
            tasks = await self._tasks(row)
        except (BackendError, ConfigError) as exc:
            logger.warning("job %s: %s did not answer: %s", row.id, row.backend, exc)
            return row
        return await self._record(row, tasks)

    async def _tasks(self, row: JobRow) -> list[JobTask]:
        if row.backend == "kubernetes":
            return await self.kubernetes.tasks(row.slurm_job_id, load_job(dict(row.spec), row.id))
        return await self.runner.tasks(row.slurm_job_id)

    async def _record(self, row: JobRow, tasks: list[JobTask]) -> JobRow:
        """Store the job's state from ``tasks``; charge it (and keep its output) when it ended."""
        fields = _summarize(tasks, row.backend)
        # Conditional on the state read: of two refreshes racing, one charges the job.
        moved = await asyncio.to_thread(self.store.update_job, row.id, row.state, **fields)
        if moved and fields["state"] != row.state:
            logger.info("job %s: %s -> %s", row.id, row.state, fields["state"])
            if fields["state"] in _FINISHED:
                self._charge(row, tasks)
                if row.backend == "kubernetes":
                    await self._keep_logs(row, tasks)
        refreshed = await asyncio.to_thread(self.store.job, row.id)
        return refreshed or row

    async def _keep_logs(self, row: JobRow, tasks: list[JobTask]) -> None:
        """Copy each pod's output to the job's log folder, so it outlives the pods."""
        for task in tasks:
            number = 0 if task.task is None else task.task
            try:
                text = await self.kubernetes.logs(row.slurm_job_id, number, _KEPT_LINES)
            except BackendError as exc:
                logger.warning("job %s: output of task %s not kept: %s", row.id, number, exc)
                continue
            await asyncio.to_thread(_write_text, Path(row.log_dir) / f"{number}.log", text)

    def _charge(self, row: JobRow, tasks: list[JobTask]) -> None:
        """Put a finished job's node- and GPU-hours, as its scheduler timed them, in the ledger.

        A Slurm task spans all the job's nodes; a Kubernetes task is one pod on one node.
        """
        if self._ledger is None or row.tenant_id is None:
            return
        job = load_job(dict(row.spec))
        nodes = 1 if row.backend == "kubernetes" else job.nodes
        seconds = sum(
            max(0.0, t.ended_at - t.started_at) for t in tasks if t.started_at and t.ended_at
        )
        self._ledger.record(
            tenant_id=row.tenant_id,
            key_id=None,
            kind="allocation",
            model=row.name,
            endpoint=f"job.{row.backend}",
            seconds=seconds,
            node_hours=seconds * nodes / 3600,
            gpu_hours=seconds * nodes * job.resources.gpus / 3600,
            source=row.backend,
        )


def _summarize(tasks: list[JobTask], backend: str = "slurm") -> dict[str, Any]:
    """The job row's fields from the states of its tasks."""
    if not tasks:
        scheduler = "Kubernetes" if backend == "kubernetes" else "Slurm"
        return {
            "state": AllocationState.UNKNOWN.value,
            "reason": f"{scheduler} no longer knows this job",
        }
    states = {t.state for t in tasks}
    if not all(s.finished for s in states):
        started = AllocationState.RUNNING in states or any(s.finished for s in states)
        state = AllocationState.RUNNING if started else AllocationState.PENDING
    elif states == {AllocationState.COMPLETED}:
        state = AllocationState.COMPLETED
    else:
        state = next(s for s in _ENDINGS if s in states)
    codes = [t.exit_code for t in tasks if t.exit_code is not None]
    starts = [t.started_at for t in tasks if t.started_at]
    ends = [t.ended_at for t in tasks if t.ended_at]
    reason = next((t.reason for t in tasks if t.reason), "")
    return {
        "state": state.value,
        "reason": reason,
        "exit_code": max(codes) if state.finished and codes else None,
        "tasks": [t.to_dict() for t in tasks],
        "started_at": _time(min(starts)) if starts else None,
        "ended_at": _time(max(ends)) if state.finished and ends else None,
    }


def _view(row: JobRow) -> dict[str, Any]:
    spec = load_job(dict(row.spec), row.id)
    nodes = sorted({str(t["nodes"]) for t in row.tasks if t.get("nodes")})
    return {
        "id": row.id,
        "name": row.name,
        "backend": row.backend,
        "slurm_job_id": row.slurm_job_id,
        "state": row.state,
        "reason": row.reason,
        "exit_code": row.exit_code,
        "nodes": ",".join(nodes),
        "array": spec.array,
        "tasks": row.tasks,
        "command": list(spec.command),
        "submitted_at": row.submitted_at.isoformat(),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "log_dir": row.log_dir,
        "spec": row.spec,
    }


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    with path.open(errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))
