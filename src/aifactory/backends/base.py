"""The one interface every backend implements: submit, status, cancel, render.

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
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aifactory.specs import KubernetesOptions, Resources, SlurmOptions


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
    """

    state: AllocationState
    reason: str = ""
    exit_code: int | None = None
    node: str = ""
    ends_at: float | None = None
    starts_at: float | None = None


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
        refuse the allocation. Used to send burst replicas to the stack that starts them soonest.
        """
        ...

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        """The state of each handle; unknown handles map to ``UNKNOWN``."""
        ...

    async def cancel(self, handle: str) -> None:
        """Stop an allocation (politely first); a finished one is a no-op."""
        ...

    def render(self, request: AllocationRequest) -> str:
        """Human-readable text of exactly what ``submit`` would run."""
        ...

    async def tagged(self) -> dict[str, str]:
        """Live allocations this control plane started: replica id -> handle.

        Used to adopt replicas after a restart and to cancel strays.
        """
        ...

    async def aclose(self) -> None:
        """Release the backend; a local backend stops what it started."""
        ...
