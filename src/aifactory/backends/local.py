"""Local backend: replicas are child processes of the control plane.

Each allocation is a process group led by the launcher; cancel sends SIGTERM
to the group, then SIGKILL after a grace period. The launcher and the engine
ask Linux to kill them when their parent dies, so a control plane killed
with -9 leaves no orphans. CPU threads are budgeted: the sum of the running
replicas' ``cpus`` never exceeds ``cpus`` (oversubscribing 2 cores made two
llama.cpp replicas 5-7x slower).

Each allocation runs as its request's identity: a root control plane starts
it through ``setpriv`` with that uid, gid and supplementary groups and
nothing else; an unprivileged one puts the site's launch prefix (``sudo -n
-u USER --``) in front of the launcher. Either way it gets the identity's
own HOME.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from aifactory.backends.base import AllocationRequest, AllocationState, AllocationStatus
from aifactory.errors import BackendError, CapacityExceeded
from aifactory.identity import Privilege, choose_privilege

if TYPE_CHECKING:
    from aifactory.config import Settings

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 10.0


@dataclass
class _Allocation:
    process: asyncio.subprocess.Process
    cpus: int
    cancelled: bool = False
    timed_out: bool = False
    timer: asyncio.TimerHandle | None = None
    stopper: asyncio.Task[None] | None = None
    ends_at: float | None = None


class LocalBackend:
    """Runs each replica as a local process group."""

    name = "local"
    advertise_host = "127.0.0.1"

    def __init__(self, cpus: int | None = None, privilege: Privilege | None = None) -> None:
        self.cpus = cpus or os.cpu_count() or 1
        self._privilege = privilege or choose_privilege(Path("/nonexistent"), "", False)
        self._allocations: dict[str, _Allocation] = {}

    @classmethod
    def from_settings(cls, settings: Settings, instance: str) -> LocalBackend:
        """The backend the settings describe (its processes are this machine's: no instance tag)."""
        return cls(settings.local_cpus, settings.privilege)

    @property
    def cpus_in_use(self) -> int:
        """CPUs held by allocations still running."""
        return sum(a.cpus for a in self._allocations.values() if a.process.returncode is None)

    async def submit(self, request: AllocationRequest) -> str:
        """Start the launcher as a new process group."""
        if request.resources.gpus:
            raise BackendError(
                f"{request.service}: the local backend has no GPUs to give.",
                fix="set `resources.gpus: 0` or deploy with `backend: slurm`",
            )
        free = self.cpus - self.cpus_in_use
        if request.resources.cpus > free:
            raise CapacityExceeded(
                f"{request.service}: needs {request.resources.cpus} CPUs, {free} of "
                f"{self.cpus} free on this machine.",
                fix="lower `resources.cpus`, delete another service, or set AIFACTORY_LOCAL_CPUS",
            )
        argv, env = list(request.argv), dict(os.environ)
        if request.identity is not None:
            argv = self._privilege.process_command(request.identity, argv)
            env = self._privilege.environment(request.identity, env)
        env.update(request.env)
        log = await asyncio.to_thread(_open_log, request.log_path)
        with log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            except OSError as exc:
                raise BackendError(
                    f"{request.service}: could not start {argv[0]} as "
                    f"{request.identity.user if request.identity else 'this user'}: {exc}.",
                    fix="check that the workload's user can read and run the project's Python "
                    "(every folder above .venv needs o+x) and AIFACTORY_LAUNCH_PREFIX",
                ) from exc
        handle = str(process.pid)
        allocation = _Allocation(process, request.resources.cpus)
        self._allocations[handle] = allocation
        if request.time_limit_s is not None:
            # Like a walltime: the allocation is stopped when its time is up.
            allocation.ends_at = time.time() + request.time_limit_s
            allocation.timer = asyncio.get_running_loop().call_later(
                request.time_limit_s, self._time_up, handle
            )
        logger.info("replica %s: started local process group %s", request.replica_id, handle)
        return handle

    async def start_delay(self, request: AllocationRequest) -> float | None:
        """0 when this machine has the CPUs free now; None when it has not (or no GPUs)."""
        fits = not request.resources.gpus and request.resources.cpus <= self.cpus - self.cpus_in_use
        return 0.0 if fits else None

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        """Running, or how the process ended."""
        result = {}
        for handle in handles:
            allocation = self._allocations.get(handle)
            if allocation is None:
                result[handle] = AllocationStatus(AllocationState.UNKNOWN, "not started here")
                continue
            code = allocation.process.returncode
            if code is None:
                result[handle] = AllocationStatus(
                    AllocationState.RUNNING, node="localhost", ends_at=allocation.ends_at
                )
            elif allocation.timed_out:
                result[handle] = AllocationStatus(
                    AllocationState.TIMEOUT, "time limit reached", code
                )
            elif allocation.cancelled:
                result[handle] = AllocationStatus(AllocationState.CANCELLED, "cancelled", code)
            elif code == 0:
                result[handle] = AllocationStatus(AllocationState.COMPLETED, "exited 0", code)
            else:
                result[handle] = AllocationStatus(
                    AllocationState.FAILED, _describe_exit(code), code
                )
        return result

    async def cancel(self, handle: str) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period."""
        allocation = self._allocations.get(handle)
        if allocation is None:
            return
        allocation.cancelled = True
        if allocation.timer is not None:
            allocation.timer.cancel()
        process = allocation.process
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
            except TimeoutError:
                logger.warning("process group %s ignored SIGTERM; killing it", handle)
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        # The engine may outlive its launcher by a moment: make sure the group is gone.
        _signal_group(process.pid, signal.SIGKILL)

    async def tagged(self) -> dict[str, str]:
        """Nothing to adopt: local replicas die with the control plane."""
        return {}

    def _time_up(self, handle: str) -> None:
        allocation = self._allocations[handle]
        if allocation.process.returncode is None:
            logger.info("process group %s reached its time limit; stopping it", handle)
            allocation.timed_out = True
            allocation.stopper = asyncio.get_running_loop().create_task(self.cancel(handle))

    def render(self, request: AllocationRequest) -> str:
        """The command line, quoted for reading (as which user it runs, first)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(request.env.items()))
        argv = list(request.argv)
        if request.identity is not None:
            argv = self._privilege.process_command(request.identity, argv)
        command = shlex.join(argv)
        return f"{env} {command} >> {shlex.quote(str(request.log_path))} 2>&1".strip()

    async def aclose(self) -> None:
        """Stop every process this backend started."""
        await asyncio.gather(*(self.cancel(h) for h in list(self._allocations)))
        self._allocations.clear()


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
