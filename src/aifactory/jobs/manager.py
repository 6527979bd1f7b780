"""The batch-jobs facade: what the admin API and the CLI may ask about jobs.

A job runs where its spec's ``backend`` says, through that backend's
``JobRunner`` (built on first use, so the Kubernetes client is imported only
when a job needs it); nothing here depends on which. States are refreshed
from the scheduler when asked (on read), and by a slow sweep (every
``_SWEEP_S``) so that every finished job reaches the usage ledger: a job that
is still pending or running is looked up each time, and its last known state
is kept in the store, so a finished job is still described after the
scheduler forgot it::

    submit(job)   -> runner.for_tenant -> render (kept in ID/job.sh|job.yaml) -> runner.submit
                  -> jobs row (pending)
    describe(id)  -> runner.tasks (unfinished only) -> per-task states -> row
                     once finished: charge the ledger, runner.keep_output
    logs(id)      -> runner.logs (files in DATA_DIR/logs/jobs/ID, or the scheduler's)
    cancel(id)    -> runner.cancel -> describe
                     (a runner whose cancel deletes the job: record it as cancelled first)

The store keeps the runner's handle; the view still calls it ``slurm_job_id``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aifactory.backends import AllocationState, JobRunner, JobTask, SubmittedJob, load_job_runner
from aifactory.config import Settings
from aifactory.errors import BackendError, BadRequest, ConfigError, NotFound
from aifactory.identity import Identity
from aifactory.specs import Job, load_job
from aifactory.store import JobRow, Store, TenantRow
from aifactory.tenancy import TenantIdentities, UsageLedger

logger = logging.getLogger(__name__)

_SWEEP_S = 15.0

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
        settings: Data directory, and each runner's settings (Slurm site
            defaults and command timeout, Kubernetes namespace, image and client).
        store: Where jobs are recorded.
        instance: This control plane's id (tags its Slurm jobs and Kubernetes Jobs).
        ledger: Where finished jobs' node- and GPU-hours are charged.
        runners: Runners by backend name, used instead of building them from
            the settings on first use.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        instance: str,
        ledger: UsageLedger | None = None,
        runners: Mapping[str, JobRunner] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._instance = instance
        self._ledger = ledger
        self._runners: dict[str, JobRunner] = dict(runners or {})
        self.identities = TenantIdentities.from_settings(settings)
        self._sweeper: asyncio.Task[None] | None = None

    def runner(self, backend: str) -> JobRunner:
        """The runner of jobs on ``backend``, built on first use.

        Raises:
            ConfigError: no runner runs jobs on ``backend``.
        """
        if backend not in self._runners:
            self._runners[backend] = load_job_runner(backend, self.settings, self._instance)
        return self._runners[backend]

    def log_dir(self, job_id: str) -> Path:
        """Where a job's output files go."""
        return self.settings.logs_dir / "jobs" / job_id

    def render(self, job: Job, job_id: str = "") -> str:
        """What ``submit`` would send: the batch script (Slurm), the Job manifests (Kubernetes).

        Raises:
            BackendError: when a value could not be rendered safely.
        """
        job_id = job_id or f"{job.name}-XXXXXX"
        return self.runner(job.backend).render(job, job_id, self.log_dir(job_id))

    async def submit(self, job: Job, tenant_id: int | None) -> dict[str, Any]:
        """Submit ``job``; return its view (state ``pending``).

        Raises:
            BadRequest: the job could not be rendered, or the scheduler refused it.
        """
        runner = self.runner(job.backend)
        tenant = await asyncio.to_thread(self._tenant, tenant_id)
        if tenant is not None:
            job = runner.for_tenant(
                job, tenant.slurm_account, tenant.slurm_partition, tenant.slurm_qos
            )
        job_id = f"{job.name}-{secrets.token_hex(3)}"
        try:
            identity = await asyncio.to_thread(self.identities.of, tenant)
            log_dir = await asyncio.to_thread(self._own_log_dir, job_id, identity)
            text = runner.render(job, job_id, log_dir, identity)
            await asyncio.to_thread(
                self.identities.privilege.give_file,
                identity,
                log_dir / runner.rendered_name,
                text,
            )
            handle = await runner.submit(job, job_id, log_dir, identity)
        except (BackendError, ConfigError) as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        await asyncio.to_thread(
            self.store.add_job,
            id=job_id,
            name=job.name,
            spec=job.to_document(),
            backend=job.backend,
            handle=handle,
            state=AllocationState.PENDING.value,
            log_dir=str(log_dir),
            tenant_id=tenant_id,
            run_as=identity.user if not self.identities.privilege.single_user else "",
        )
        logger.info("job %s: submitted as %s job %s", job_id, job.backend, handle)
        return await self.describe(job_id)

    def _own_log_dir(self, job_id: str, identity: Identity) -> Path:
        """The job's folder, in its identity's own directory (it writes its output there)."""
        privilege = self.identities.privilege
        folder = privilege.workload_dir(identity) / "jobs" / job_id
        privilege.make_dir(identity, folder)
        return folder

    async def _submitted(self, row: JobRow) -> SubmittedJob:
        """What the job's runner needs to know of its row (and who it runs as)."""
        known = tuple(n for t in row.tasks if isinstance(n := t.get("task"), int))
        try:
            identity = await asyncio.to_thread(self.identities.by_user, row.run_as)
        except ConfigError as exc:
            raise BackendError(f"job {row.id} runs as {row.run_as!r}: {exc.message}") from exc
        return SubmittedJob(
            id=row.id,
            handle=row.handle,
            spec=load_job(dict(row.spec), row.id),
            log_dir=Path(row.log_dir),
            known_tasks=known,
            identity=identity,
        )

    def _tenant(self, tenant_id: int | None) -> TenantRow | None:
        return next((t for t in self.store.tenants() if t.id == tenant_id), None)

    async def start(self) -> None:
        """Start the sweep that brings unfinished jobs' states (and usage) in."""
        self._sweeper = asyncio.create_task(self._sweep(), name="jobs-sweep")

    async def stop(self) -> None:
        """Stop the sweep; release the runners (the Kubernetes client)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await asyncio.gather(*(r.aclose() for r in self._runners.values()))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                rows = await asyncio.to_thread(self.store.jobs, 1000)
                await asyncio.gather(*(self._refresh(r) for r in rows if r.state not in _FINISHED))
            except Exception:
                logger.exception("refreshing jobs failed; retrying")

    async def jobs(self, limit: int = 50, tenant_id: int | None = None) -> list[dict[str, Any]]:
        """The newest jobs (of one tenant, when given), with fresh states for unfinished ones."""
        rows = await asyncio.to_thread(self.store.jobs, limit, tenant_id)
        fresh = await asyncio.gather(*(self._refresh(row) for row in rows))
        return [_view(row) for row in fresh]

    async def active_jobs(self, tenant_id: int) -> int:
        """How many of the tenant's jobs have not finished (as last seen)."""
        rows = await asyncio.to_thread(self.store.jobs, 100_000, tenant_id)
        return sum(1 for row in rows if row.state not in _FINISHED)

    async def describe(self, id_or_name: str, tenant_id: int | None = None) -> dict[str, Any]:
        """One job (by id, or the newest of that name) with each task's state.

        With ``tenant_id``, only that tenant's jobs exist.

        Raises:
            NotFound: no such job.
        """
        row = await self._refresh(await self._find(id_or_name, tenant_id))
        return _view(row)

    async def logs(
        self,
        id_or_name: str,
        task: int | None = None,
        lines: int = 200,
        tenant_id: int | None = None,
    ) -> str:
        """The last lines of a job's output (of one task: the first by default).

        Raises:
            NotFound: no such job or task.
            BadRequest: a task asked of a job that has one.
        """
        row = await self._refresh(await self._find(id_or_name, tenant_id))
        return await self.runner(row.backend).logs(await self._submitted(row), task, lines)

    async def cancel(self, id_or_name: str, tenant_id: int | None = None) -> dict[str, Any]:
        """Cancel a job (all its tasks); a finished job stays as it ended.

        Where cancelling deletes the job from its scheduler (Kubernetes), the
        job is recorded as cancelled and its output kept first; cancelling a
        finished job there deletes what is left of it.

        Raises:
            NotFound: no such job.
            BackendError: the scheduler did not answer or refused.
        """
        row = await self._find(id_or_name, tenant_id)
        runner = self.runner(row.backend)
        finished = row.state in _FINISHED
        if runner.cancel_deletes and not finished:
            tasks = await runner.tasks(await self._submitted(row))
            await self._record(row, [t.cancelled(time.time()) for t in tasks])
        if runner.cancel_deletes or not finished:
            await runner.cancel(await self._submitted(row))
        return await self.describe(row.id)

    async def _find(self, id_or_name: str, tenant_id: int | None = None) -> JobRow:
        row = await asyncio.to_thread(self.store.job, id_or_name)
        if row is not None and tenant_id is not None and row.tenant_id != tenant_id:
            row = None
        if row is None:
            row = await asyncio.to_thread(self.store.newest_job, id_or_name, tenant_id)
        if row is None:
            raise NotFound(f"job {id_or_name!r} does not exist.", fix="see `aifactory jobs ls`")
        return row

    async def _refresh(self, row: JobRow) -> JobRow:
        if row.state in _FINISHED or not row.handle:
            return row
        try:
            tasks = await self.runner(row.backend).tasks(await self._submitted(row))
        except (BackendError, ConfigError) as exc:
            logger.warning("job %s: %s did not answer: %s", row.id, row.backend, exc)
            return row
        return await self._record(row, tasks)

    async def _record(self, row: JobRow, tasks: list[JobTask]) -> JobRow:
        """Store the job's state from ``tasks``; charge it (and keep its output) when it ended."""
        runner = self.runner(row.backend)
        fields = _summarize(tasks, runner.scheduler)
        # Conditional on the state read: of two refreshes racing, one charges the job.
        moved = await asyncio.to_thread(self.store.update_job, row.id, row.state, **fields)
        if moved and fields["state"] != row.state:
            logger.info("job %s: %s -> %s", row.id, row.state, fields["state"])
            if fields["state"] in _FINISHED:
                self._charge(row, tasks, runner)
                await runner.keep_output(await self._submitted(row), tasks)
        refreshed = await asyncio.to_thread(self.store.job, row.id)
        return refreshed or row

    def _charge(self, row: JobRow, tasks: list[JobTask], runner: JobRunner) -> None:
        """Put a finished job's node- and GPU-hours, as its scheduler timed them, in the ledger.

        Each task is charged for the nodes it holds (a Slurm task spans all
        the job's nodes; a Kubernetes task is one pod on one node).
        """
        if self._ledger is None or row.tenant_id is None:
            return
        job = load_job(dict(row.spec))
        nodes = runner.nodes_per_task(job)
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
            activity=row.id,
        )


def _summarize(tasks: list[JobTask], scheduler: str) -> dict[str, Any]:
    """The job row's fields from the states of its tasks (``scheduler`` names who ran them)."""
    if not tasks:
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
        "slurm_job_id": row.handle,
        "run_as": row.run_as,
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
