"""Where a batch's shards run: a process of this machine, or a job on a scheduler.

One shard is one worker (``aifactory.batches.worker``) with its own engine.
Both runners take the same ``ShardLaunch`` and answer with the same
``ShardState``, so the supervisor neither knows nor cares which ran it::

    local:  setpriv/prefix -> worker (process group) -> engine     handle: the pid
            its output in DATA_DIR/logs/batches/NAME.log
    slurm:  JobRunner.render/submit (sbatch --uid as the tenant)   handle: Slurm's job id
            on the lending partition/QOS unless the batch asks for normal priority
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from aifactory.backends import AllocationState, JobRunner, SubmittedJob
from aifactory.identity import Identity, Privilege
from aifactory.specs import Job, Resources, SlurmOptions
from aifactory.store import TenantRow

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class ShardLaunch:
    """One shard to start: who runs it, what, where its files go, with what resources.

    Attributes:
        name: The shard's name (``batch-ID-I``), unique among this control plane's.
        argv: The worker's command line.
        identity: The tenant's Unix identity it runs as.
        folder: The shard's folder (the identity's): its output, a Slurm job's script and log.
        resources: The engine's CPUs, memory and GPUs (the model's service spec's).
        time_limit_s: The job's walltime (None: the site's).
        lend: Whether it runs as lent, preemptible work.
        tenant: The tenant's row (its Slurm account and defaults).
    """

    name: str
    argv: tuple[str, ...]
    identity: Identity
    folder: Path
    resources: Resources
    time_limit_s: float | None
    lend: bool
    tenant: TenantRow | None


@dataclass(frozen=True)
class ShardState:
    """Where a shard's run stands (``AllocationState`` words), why, and when it may start."""

    state: str
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    expected_start: float | None = None

    @property
    def ended(self) -> bool:
        """Whether this run is over (the scheduler forgot it, too)."""
        return self.state not in (AllocationState.PENDING.value, AllocationState.RUNNING.value)


class ShardRunner(Protocol):
    """Starts, follows and stops shards on one stack."""

    name: str

    async def start(self, launch: ShardLaunch) -> str:
        """Start the shard; its handle."""
        ...

    async def state(self, launch: ShardLaunch, handle: str) -> ShardState:
        """Where the run ``handle`` of the shard stands."""
        ...

    async def cancel(self, launch: ShardLaunch, handle: str) -> None:
        """Stop the run (what it answered stays in its output)."""
        ...


@dataclass
class _Process:
    process: asyncio.subprocess.Process
    started_at: float
    cancelled: bool = False
    ended_at: float | None = None


class LocalShards:
    """Shards as process groups of this machine, started as the tenant's identity."""

    name = "local"

    def __init__(self, privilege: Privilege, logs_dir: Path) -> None:
        self._privilege = privilege
        self._logs_dir = logs_dir
        self._runs: dict[str, _Process] = {}

    async def start(self, launch: ShardLaunch) -> str:
        """Start the worker (its own process group), its output in the control plane's logs.

        The log lies in the control plane's folder, like replicas' logs: a
        file it opened in the tenant's folder could be a link the tenant put there.
        """
        identity = launch.identity
        log = await asyncio.to_thread(_open_log, self._logs_dir / f"{launch.name}.log")
        argv = self._privilege.process_command(identity, launch.argv)
        env = self._privilege.environment(identity, dict(os.environ))
        with log as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=launch.folder,
                start_new_session=True,
            )
        handle = str(process.pid)
        run = _Process(process, time.time())
        self._runs[handle] = run
        asyncio.get_running_loop().create_task(self._reap(run), name=f"shard-{launch.name}")
        return handle

    async def _reap(self, run: _Process) -> None:
        await run.process.wait()
        run.ended_at = time.time()

    async def state(self, launch: ShardLaunch, handle: str) -> ShardState:
        """From the process this control plane started (none after a restart: lost)."""
        run = self._runs.get(handle)
        if run is None:
            return ShardState(
                AllocationState.UNKNOWN.value, "not running (the control plane restarted)"
            )
        code = run.process.returncode
        if code is None or run.ended_at is None:
            return ShardState(AllocationState.RUNNING.value, "", run.started_at)
        if run.cancelled:
            state, reason = AllocationState.CANCELLED, "cancelled"
        elif code == 0:
            state, reason = AllocationState.COMPLETED, ""
        else:
            state, reason = AllocationState.FAILED, f"the worker exited with {code}"
        return ShardState(state.value, reason, run.started_at, run.ended_at)

    async def cancel(self, launch: ShardLaunch, handle: str) -> None:
        """SIGTERM to the group, SIGKILL after a grace period."""
        run = self._runs.get(handle)
        if run is None or run.process.returncode is not None:
            return
        run.cancelled = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(run.process.wait(), _STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGKILL)


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path.open("ab")


class SlurmShards:
    """Shards as Slurm batch jobs, through the jobs layer's ``JobRunner``.

    Args:
        runner: Slurm's job runner.
        privilege: How the job's script is handed to the tenant's identity.
        lend_partition: The site's lending partition ("" : none; lent shards
            then run on the tenant's partition).
        lend_qos: The site's lending QOS.
    """

    def __init__(
        self, runner: JobRunner, privilege: Privilege, lend_partition: str, lend_qos: str
    ) -> None:
        self._runner = runner
        self._privilege = privilege
        self._lend = (lend_partition, lend_qos)
        self.name = runner.name

    def job(self, launch: ShardLaunch) -> Job:
        """The shard's Job spec, charged to the tenant's account."""
        partition, qos = self._lend if launch.lend else ("", "")
        job = Job(
            name=launch.name[:63],
            command=launch.argv,
            resources=launch.resources,
            time_limit_s=launch.time_limit_s,
            workdir=str(launch.folder),
            backend="slurm",
            slurm=SlurmOptions(partition=partition or None, qos=qos or None),
        )
        tenant = launch.tenant
        if tenant is None:
            return job
        return self._runner.for_tenant(
            job, tenant.slurm_account, tenant.slurm_partition, tenant.slurm_qos
        )

    async def start(self, launch: ShardLaunch) -> str:
        """Render the job (kept in the shard's folder) and submit it as the tenant."""
        job = self.job(launch)
        text = self._runner.render(job, launch.name, launch.folder, launch.identity)
        await asyncio.to_thread(
            self._privilege.give_file,
            launch.identity,
            launch.folder / self._runner.rendered_name,
            text,
        )
        return await self._runner.submit(job, launch.name, launch.folder, launch.identity)

    def _submitted(self, launch: ShardLaunch, handle: str) -> SubmittedJob:
        return SubmittedJob(
            launch.name, handle, self.job(launch), launch.folder, (), launch.identity
        )

    async def state(self, launch: ShardLaunch, handle: str) -> ShardState:
        """The job's one task, as the scheduler tells it."""
        tasks = await self._runner.tasks(self._submitted(launch, handle))
        if not tasks:
            return ShardState(
                AllocationState.UNKNOWN.value, f"{self._runner.scheduler} forgot the job"
            )
        task = tasks[0]
        return ShardState(
            task.state.value, task.reason, task.started_at, task.ended_at, task.expected_start
        )

    async def cancel(self, launch: ShardLaunch, handle: str) -> None:
        """Cancel the job."""
        await self._runner.cancel(self._submitted(launch, handle))
