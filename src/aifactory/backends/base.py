"""The interfaces backends implement: ``Backend`` for replicas, ``JobRunner`` for batch jobs.

A backend knows *where* work runs (local processes, Slurm jobs, Kubernetes
pods); it knows nothing of tenants, models or routing. The control plane
hands it an ``AllocationRequest`` and tracks it by the returned handle::

    control.reconciler                    backend
    ------------------                    -------
    submit(request)  ------------------>  start the launcher somewhere
                     <------------------  handle ("4711", a pid, a pod name)
    status([handles]) ----------------->  ask the scheduler
                     <------------------  {handle: AllocationStatus}
    cancel(handle)   ------------------>  SIGTERM / scancel / delete pod

The launcher inside the allocation starts the engine and registers
``host:port`` back with the control plane; that path is the same on every
backend.

Batch jobs (``kind: Job``) run to their end instead, on Slurm or Kubernetes;
``JobRunner`` is their interface, and ``jobs.JobsManager`` knows no other::

    JobsManager                           JobRunner
    -----------                           ---------
    render(job, id, log_dir)  ----------> batch script / Job manifests
    submit(job, id, log_dir)  ----------> handle (Slurm job id, Job set name)
    tasks(SubmittedJob)       ----------> [JobTask] (empty: the scheduler forgot it)
    keep_output(job, tasks)   ----------> once it ended: keep what the scheduler drops
    logs(job, task, lines)    ----------> the last lines of a task's output
    cancel(job)               ----------> scancel / delete the Jobs
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aifactory.identity import Identity
from aifactory.specs import Job, KubernetesOptions, Resources, SlurmOptions

# The walltime of a job whose spec sets none, unless the site sets another
# (``AIFACTORY_DEFAULT_TIME_LIMIT_S``): never unlimited.
DEFAULT_TIME_LIMIT_S = 24 * 3600.0


class AllocationState(enum.Enum):
    """Where an allocation stands, the same words for every backend."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        """Whether the allocation has ended for good."""
        return self in _FINISHED


_FINISHED = {
    AllocationState.COMPLETED,
    AllocationState.FAILED,
    AllocationState.CANCELLED,
    AllocationState.TIMEOUT,
    AllocationState.PREEMPTED,
}


@dataclass(frozen=True)
class JobTask:
    """One task of a batch job (the whole job when it is not an array).

    On Kubernetes a task is one batch/v1 Job (one pod): the fields named
    ``slurm_*`` keep their names for the jobs API and hold the Kubernetes
    Job's name and its word for the state (a condition or a pod phase).

    Attributes:
        task: The array index (on Kubernetes also the node index of a
            multi-node job), or None for a job with one task.
        slurm_job_id: Slurm's own id of this task's job record.
        state: Where it stands, in the shared words.
        slurm_state: Slurm's word for it (``PENDING``, ``NODE_FAIL``…).
        reason: Why it waits or how it ended, in plain words.
        exit_code: The exit code once finished (0 when killed by a signal).
        signal: The signal that killed it, if any.
        nodes: The node list (``n[1-2]``).
        started_at: Unix time it started, when it did.
        ended_at: Unix time it ended, when it did.
        expected_start: While it waits, the Unix time the scheduler expects
            to start it (Slurm's backfill estimate), when it has one.
    """

    task: int | None
    slurm_job_id: str
    state: AllocationState
    slurm_state: str
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None
    nodes: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    expected_start: float | None = None

    def cancelled(self, at: float) -> JobTask:
        """This task as cancelled at Unix time ``at``, unless it had already ended."""
        if self.state.finished:
            return self
        return replace(self, state=AllocationState.CANCELLED, reason="cancelled", ended_at=at)

    def to_dict(self) -> dict[str, Any]:
        """The task as plain JSON values."""
        return {
            "task": self.task,
            "slurm_job_id": self.slurm_job_id,
            "state": self.state.value,
            "slurm_state": self.slurm_state,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "nodes": self.nodes,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


@dataclass(frozen=True)
class AllocationRequest:
    """What to run for one replica, and with what.

    Attributes:
        replica_id: The control plane's id of the replica.
        service: The service name (for job names and log folders).
        argv: The launcher command; never passed through a shell.
        resources: CPUs, memory and GPUs the allocation needs.
        time_limit_s: Wall-clock limit, or None for no limit.
        log_path: Where the allocation's output goes.
        env: Extra environment variables for the launcher.
        slurm: Partition, account, QOS and extra options (Slurm only).
        kubernetes: Node selector and tolerations (Kubernetes only).
        secret_files: One-time files the launcher reads and deletes (its
            token, an agent's key), all in one folder of the control plane's
            disk. Backends that share that disk with their nodes leave them
            there; Kubernetes moves them into a Secret of the Pod.
        identity: The Unix identity the allocation runs as (its tenant's);
            None only in single-user mode, where it runs as the control plane.
            Files in ``secret_files`` already belong to it.
    """

    replica_id: str
    service: str
    argv: tuple[str, ...]
    resources: Resources
    time_limit_s: float | None
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    kubernetes: KubernetesOptions = field(default_factory=KubernetesOptions)
    secret_files: tuple[Path, ...] = ()
    identity: Identity | None = None


@dataclass(frozen=True)
class AllocationStatus:
    """What a backend knows about one allocation.

    Attributes:
        state: Where it stands.
        reason: Why, in plain words (a pending reason, how it ended).
        exit_code: The exit code once finished, when known.
        node: Where it runs.
        ends_at: Unix time its time limit ends, when running with one.
        starts_at: Unix time the scheduler expects it to start, when pending.
        answered: False when the scheduler could not be asked: the state is
            then ``UNKNOWN`` and says nothing of the allocation, which may
            well still run. ``UNKNOWN`` with ``answered`` True is the
            scheduler's own answer: it knows no such allocation (any more).
    """

    state: AllocationState
    reason: str = ""
    exit_code: int | None = None
    node: str = ""
    ends_at: float | None = None
    starts_at: float | None = None
    answered: bool = True

    @classmethod
    def no_answer(cls, reason: str) -> AllocationStatus:
        """The status of an allocation whose scheduler did not answer (``reason`` says why)."""
        return cls(AllocationState.UNKNOWN, reason, answered=False)


class Backend(Protocol):
    """Where replicas run.

    Attributes:
        name: The backend's name in specs (``local``, ``slurm``, ``kubernetes``).
        advertise_host: The host the launcher reports, or ``auto`` to let it
            use the node's own name.
    """

    name: str
    advertise_host: str

    async def submit(self, request: AllocationRequest) -> str:
        """Start an allocation; return its handle.

        Raises:
            CapacityExceeded: when it cannot fit now (try again later).
            BackendError: when the backend refused it.
        """
        ...

    async def start_delay(self, request: AllocationRequest) -> float | None:
        """Seconds until an allocation like ``request`` could start; None: cannot tell.

        The scheduler's own view, never submitted; None also when it would
        refuse the allocation. Used to send burst replicas to the stack that
        starts them soonest.
        """
        ...

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        """The state of each handle; unknown handles map to ``UNKNOWN``.

        When the scheduler does not answer, every handle maps to
        ``AllocationStatus.no_answer`` (``UNKNOWN``, ``answered`` False):
        never to a state that reads as gone, and never an exception.
        """
        ...

    async def cancel(self, handle: str) -> None:
        """Stop an allocation (politely first); a finished one is a no-op.

        Raises:
            BackendError: when the scheduler refused or did not answer.
        """
        ...

    def render(self, request: AllocationRequest) -> str:
        """Human-readable text of exactly what ``submit`` would run."""
        ...

    async def tagged(self) -> dict[str, str]:
        """Live allocations this control plane started: replica id -> handle.

        Used to adopt replicas after a restart and to cancel strays.

        Raises:
            BackendError: when the scheduler did not answer; an empty answer
                always means that none runs.
        """
        ...

    async def aclose(self) -> None:
        """Release the backend; a local backend stops what it started."""
        ...


@dataclass(frozen=True)
class Elapsed:
    """When an ended allocation ran, and on how many nodes, by the scheduler's accounting."""

    started_at: float
    ended_at: float
    nodes: int


@runtime_checkable
class KeepsAccounts(Protocol):
    """A backend whose scheduler keeps its own record of what ran (Slurm's ``sacct``)."""

    async def elapsed(self, handle: str) -> Elapsed | None:
        """The ended allocation's start, end and node count; None until it is recorded."""
        ...


@dataclass(frozen=True)
class SubmittedJob:
    """A batch job as the control plane recorded it: what its runner needs to find it.

    Attributes:
        id: The control plane's id of the job.
        handle: What ``JobRunner.submit`` returned (Slurm's job id, a Kubernetes set's name).
        spec: The job's spec, as submitted.
        log_dir: The job's folder on the control plane's disk (its script, its output).
        known_tasks: The task numbers among its last recorded task states.
        identity: The Unix identity it runs as (None: the control plane's own,
            single-user mode only); listing and cancelling act as it too.
    """

    id: str
    handle: str
    spec: Job
    log_dir: Path
    known_tasks: tuple[int, ...] = ()
    identity: Identity | None = None


class JobRunner(Protocol):
    """Where batch jobs run: one scheduler's way to submit, follow, read and cancel them.

    Attributes:
        name: The backend's name in Job specs (``slurm``, ``kubernetes``).
        scheduler: The scheduler's name in messages (``Slurm``).
        rendered_name: The file in the job's folder that keeps what ``render`` returned.
        cancel_deletes: Whether ``cancel`` deletes the job from the scheduler, with
            its state and output: the caller then records the job as cancelled
            (and has ``keep_output`` keep its output) before cancelling, and
            cancels a finished job too, to delete what is left of it.
    """

    name: str
    scheduler: str
    rendered_name: str
    cancel_deletes: bool

    def for_tenant(
        self, job: Job, account: str | None, partition: str | None, qos: str | None
    ) -> Job:
        """``job`` as run for a tenant with this scheduler account and these defaults."""
        ...

    def render(self, job: Job, job_id: str, log_dir: Path, identity: Identity | None = None) -> str:
        """Human-readable text of exactly what ``submit`` would send (as ``identity``).

        Raises:
            BackendError: when a value could not be rendered safely.
        """
        ...

    async def submit(self, job: Job, job_id: str, log_dir: Path, identity: Identity | None) -> str:
        """Submit ``job`` as ``identity`` (its output going to ``log_dir``); return its handle.

        Raises:
            BackendError: when the scheduler refused it or did not answer.
            ConfigError: when the scheduler's client is not configured.
        """
        ...

    async def tasks(self, job: SubmittedJob) -> list[JobTask]:
        """Every task of ``job``, by index; empty when the scheduler forgot it.

        Raises:
            BackendError: when the scheduler did not answer.
        """
        ...

    def nodes_per_task(self, job: Job) -> int:
        """How many nodes one of ``job``'s tasks holds (what its time is charged for)."""
        ...

    async def keep_output(self, job: SubmittedJob, tasks: Sequence[JobTask]) -> None:
        """Keep, in the job's folder, output the scheduler drops (once the job ended)."""
        ...

    async def logs(self, job: SubmittedJob, task: int | None, lines: int) -> str:
        """The last ``lines`` of the output of ``task`` (by default the first, or all nodes').

        Raises:
            NotFound: no such task.
            BadRequest: a task asked of a job that has one.
            BackendError: when the scheduler did not answer.
        """
        ...

    async def cancel(self, job: SubmittedJob) -> None:
        """Cancel every task of ``job``; a job already gone is fine.

        Raises:
            BackendError: when the scheduler refused or did not answer.
        """
        ...

    async def aclose(self) -> None:
        """Release the scheduler's client."""
        ...


@dataclass(frozen=True)
class HostMount:
    """A host folder or file a job's container sees at the same path.

    Attributes:
        path: The absolute path, on every node (a filesystem they share).
        writable: Whether the container may write there (the host's modes still apply).
        file: A file, not a folder: the kubelet refuses to start the Pod
            when it is missing, instead of making an empty folder there.
    """

    path: Path
    writable: bool = False
    file: bool = False
