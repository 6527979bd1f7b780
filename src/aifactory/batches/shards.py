"""Where a batch's shards run: a process of this machine, or a job on a scheduler.

One shard is one worker (``aifactory.batches.worker``) with its own engine.
Both runners take the same ``ShardLaunch`` and answer with the same
``ShardState``, so the supervisor neither knows nor cares which ran it::

    local:  the local backend (its CPU budget; setpriv or the prefix as the tenant)
            -> worker (process group) -> engine, output in DATA_DIR/logs/batches
                                                                   handle: the pid
    slurm:  JobRunner.render/submit (sbatch --uid as the tenant)   handle: Slurm's job id
            on the lending partition/QOS unless the batch asks for normal priority
    kubernetes: a set of one batch/v1 Job, its pod as the tenant    handle: the set's name
            seeing the input file (read-only) and the shard's folder (writable)
            at their host paths: the nodes share the control plane's data folder,
            as Slurm's do; lent, its pod has the site's low PriorityClass
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from aifactory.backends import (
    AllocationRequest,
    AllocationState,
    Backend,
    HostMount,
    JobRunner,
    SubmittedJob,
)
from aifactory.identity import Identity, Privilege
from aifactory.specs import Job, Resources, SlurmOptions
from aifactory.store import TenantRow

if TYPE_CHECKING:
    from aifactory.backends import KubernetesJobRunner

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class ShardLaunch:
    """One shard to start: who runs it, what, where its files go, with what resources.

    Attributes:
        name: The shard's name (``batch-ID-I``), unique among this control plane's.
        service: The service whose model the batch asks for.
        argv: The worker's command line.
        identity: The tenant's Unix identity it runs as.
        folder: The shard's folder (the identity's): its output, a Slurm job's script and log.
        input: The batch's input file (the tenant's, in its bucket).
        resources: The engine's CPUs, memory and GPUs (the model's service spec's).
        time_limit_s: The job's walltime (None: the site's).
        lend: Whether it asks to run as lent, preemptible work (where the
            site has a place for it: a lending partition, a low PriorityClass).
        tenant: The tenant's row (its Slurm account and defaults).
    """

    name: str
    service: str
    argv: tuple[str, ...]
    identity: Identity
    folder: Path
    input: Path
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


class LocalShards:
    """Shards as allocations of the local backend: its CPU budget, identities and logs.

    A shard that does not fit the machine's free CPUs now raises
    ``CapacityExceeded`` (the supervisor tries again later). The backend
    knows whether a run goes on; this keeps when it started and was seen to end.

    Args:
        backend: The control plane's local backend (the one its replicas use).
        logs_dir: Where the shards' output goes (the control plane's folder:
            a file opened in the tenant's folder could be a link it put there).
    """

    name = "local"

    def __init__(self, backend: Backend, logs_dir: Path) -> None:
        self._backend = backend
        self._logs_dir = logs_dir
        self._started: dict[str, float] = {}
        self._ended: dict[str, float] = {}

    async def start(self, launch: ShardLaunch) -> str:
        """Submit the worker to the local backend as the tenant's identity.

        Raises:
            CapacityExceeded: not enough free CPUs on this machine now.
            BackendError: the process could not be started.
        """
        handle = await self._backend.submit(
            AllocationRequest(
                replica_id=launch.name,
                service=launch.name,
                argv=launch.argv,
                resources=launch.resources,
                time_limit_s=launch.time_limit_s,
                log_path=self._logs_dir / f"{launch.name}.log",
                identity=launch.identity,
            )
        )
        self._started[handle] = time.time()
        return handle

    async def state(self, launch: ShardLaunch, handle: str) -> ShardState:
        """The backend's status of the process (unknown after a restart: it died with us)."""
        status = (await self._backend.status([handle]))[handle]
        started = self._started.get(handle)
        if status.state in (AllocationState.PENDING, AllocationState.RUNNING):
            return ShardState(status.state.value, status.reason, started)
        ended = self._ended.setdefault(handle, time.time())
        return ShardState(status.state.value, status.reason, started, ended)

    async def cancel(self, launch: ShardLaunch, handle: str) -> None:
        """SIGTERM the process group, SIGKILL it after the backend's grace period."""
        await self._backend.cancel(handle)


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
        lent = launch.lend and bool(self._lend[0])
        partition, qos = self._lend if lent else ("", "")
        command = list(launch.argv)
        if lent:
            # Slurm signals a preempted job's steps at once but its batch shell
            # only when GraceTime ends: a lent shard runs as a step to hear it
            # and yield its node now (its finished lines are kept).
            command = ["srun", "--ntasks=1", f"--cpus-per-task={launch.resources.cpus}", *command]
        job = Job(
            name=launch.name[:63],
            command=command,
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


class KubernetesShards:
    """Shards as Kubernetes Jobs through the jobs layer's runner, their pods as the tenant.

    Each run is a new set of one Job (a fresh name): a finished Job stays
    until deleted, and its name cannot be taken again before the API server
    let it go. Once a run ended, its pod's output is kept in the control
    plane's folder and its Job deleted. A lent shard's pod has the site's
    low PriorityClass: the scheduler preempts it (deletes its pod) for any
    pod of a higher class that needs its room; the Job then makes a new pod,
    which waits for room and resumes where the preempted one stopped.

    Args:
        runner: Kubernetes' job runner (``KubernetesJobRunner``).
        logs_dir: Where each run's pod output is kept (``HANDLE/0.log``, the control
            plane's folder).
        lent_priority_class: The site's PriorityClass for lent pods ("": none;
            lent shards then run at the cluster's default priority).
    """

    name = "kubernetes"

    def __init__(self, runner: JobRunner, logs_dir: Path, lent_priority_class: str = "") -> None:
        assert runner.name == "kubernetes", runner.name
        # Imported lazily elsewhere (the Kubernetes client is optional); it takes mounts.
        self._runner = cast("KubernetesJobRunner", runner)
        self._logs_dir = logs_dir
        self._lent_priority_class = lent_priority_class
        self._cancelled: set[str] = set()

    def job(self, launch: ShardLaunch) -> Job:
        """The shard's Job spec: the worker in the shard's folder."""
        return Job(
            name=launch.name[:63],
            command=launch.argv,
            resources=launch.resources,
            time_limit_s=launch.time_limit_s,
            workdir=str(launch.folder),
            backend="kubernetes",
        )

    @staticmethod
    def mounts(launch: ShardLaunch) -> tuple[HostMount, ...]:
        """What the pod sees of the host: the input, read-only; the shard's folder, writable."""
        return (HostMount(launch.input, file=True), HostMount(launch.folder, writable=True))

    def priority_class(self, launch: ShardLaunch) -> str:
        """The pod's PriorityClass: the site's lent one, unless the batch asked for normal."""
        return self._lent_priority_class if launch.lend else ""

    async def start(self, launch: ShardLaunch) -> str:
        """Create the run's Job; its pod runs as the tenant's identity."""
        run_id = f"{launch.name}-{secrets.token_hex(3)}"
        return await self._runner.submit(
            self.job(launch),
            run_id,
            identity=launch.identity,
            mounts=self.mounts(launch),
            priority_class=self.priority_class(launch),
        )

    def _submitted(self, launch: ShardLaunch, handle: str) -> SubmittedJob:
        # Its log_dir is ours: the tenant's folder is not where root writes.
        return SubmittedJob(
            launch.name, handle, self.job(launch), self._logs_dir / handle, (), launch.identity
        )

    async def state(self, launch: ShardLaunch, handle: str) -> ShardState:
        """The Job's one task; an ended run's output is kept and its Job deleted."""
        submitted = self._submitted(launch, handle)
        tasks = await self._runner.tasks(submitted)
        if not tasks:
            if handle in self._cancelled:
                return ShardState(AllocationState.CANCELLED.value, "cancelled")
            return ShardState(AllocationState.UNKNOWN.value, "Kubernetes forgot the job")
        task = tasks[0]
        if not task.state.finished:
            return ShardState(task.state.value, task.reason, task.started_at)
        await self._runner.keep_output(submitted, tasks)
        await self._runner.cancel(submitted)
        if handle in self._cancelled:
            # Its pod ended because we deleted its Job (Kubernetes says "failed").
            return ShardState(
                AllocationState.CANCELLED.value, "cancelled", task.started_at, task.ended_at
            )
        return ShardState(task.state.value, task.reason, task.started_at, task.ended_at)

    async def cancel(self, launch: ShardLaunch, handle: str) -> None:
        """Delete the run's Job: its pod is stopped (SIGTERM, then the grace period)."""
        self._cancelled.add(handle)
        await self._runner.cancel(self._submitted(launch, handle))
