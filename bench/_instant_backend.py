"""A measurement backend for control_scale.py: answers the ``Backend`` protocol at once.

Not a product backend (nothing registers it by name): the benchmark builds
the control plane's planner with it, so what is measured is the control
plane's own cost, not a scheduler's. An allocation runs as soon as it is
submitted; at the first status poll that sees it, its "launcher" registers
with the control plane (the token the control plane wrote for it, the host
and port of one shared health server), as a real launcher would once its
job starts. Cancelled allocations end at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aifactory.backends import AllocationRequest, AllocationState, AllocationStatus

Register = Callable[[str, str, str, int], Awaitable[None]]

_RUNNING = AllocationStatus(AllocationState.RUNNING, node="bench")
_CANCELLED = AllocationStatus(AllocationState.CANCELLED, reason="cancelled")
_UNKNOWN = AllocationStatus(AllocationState.UNKNOWN)


class InstantBackend:
    """Every allocation starts at once and registers at ``host:port``."""

    advertise_host = "auto"

    def __init__(self, name: str, register: Register, host: str, port: int) -> None:
        self.name = name
        self._register = register
        self._host, self._port = host, port
        self._handles = (str(n) for n in itertools.count(1))
        self._launches: dict[str, tuple[str, Path]] = {}  # handle -> (replica id, token file)
        self._live: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: AllocationRequest) -> str:
        handle = next(self._handles)
        self._launches[handle] = (request.replica_id, request.secret_files[0])
        self._live.add(handle)
        return handle

    async def start_delay(self, request: AllocationRequest) -> float | None:
        return 0.0

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        statuses: dict[str, AllocationStatus] = {}
        for handle in handles:
            if handle not in self._live:
                statuses[handle] = _CANCELLED if handle.isdigit() else _UNKNOWN
                continue
            statuses[handle] = _RUNNING
            launch = self._launches.pop(handle, None)
            if launch is not None:  # the launcher starts with its allocation
                task = asyncio.create_task(self._launcher(*launch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return statuses

    async def _launcher(self, replica_id: str, token_file: Path) -> None:
        """What a launcher does once its job runs: read its token, register."""
        token = (await asyncio.to_thread(token_file.read_text)).strip()
        await self._register(replica_id, token, self._host, self._port)

    async def cancel(self, handle: str) -> None:
        self._live.discard(handle)
        self._launches.pop(handle, None)

    def render(self, request: AllocationRequest) -> str:
        return " ".join(request.argv)

    async def tagged(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
