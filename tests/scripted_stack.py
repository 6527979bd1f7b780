"""A stack whose answers a unit test sets: the allocations it runs for us, or no answer at all.

It keeps the ``Backend`` contract of an unreachable scheduler (``status``
answers ``AllocationStatus.no_answer``; ``tagged``, ``submit`` and ``cancel``
raise ``SchedulerUnreachable``); the real outage is in
tests/integration/test_slurm_outage.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from aifactory.backends import AllocationRequest, AllocationState, AllocationStatus
from aifactory.errors import SchedulerUnreachable


class ScriptedStack:
    """Runs what ``ours`` says (replica id -> handle) while ``reachable``; records each call."""

    name = "slurm"
    advertise_host = "auto"

    def __init__(self, ours: dict[str, str] | None = None, reachable: bool = True) -> None:
        self.ours = dict(ours or {})
        self.reachable = reachable
        self.calls: list[str] = []
        self.cancelled: list[str] = []

    def _ask(self, verb: str) -> None:
        self.calls.append(verb)
        if not self.reachable:
            raise SchedulerUnreachable(["squeue"], 1, "", "Unable to contact slurm controller")

    async def tagged(self) -> dict[str, str]:
        self._ask("tagged")
        return dict(self.ours)

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        self.calls.append("status")
        if not self.reachable:
            return {h: AllocationStatus.no_answer("Slurm did not answer") for h in handles}
        running = set(self.ours.values())
        known = {h: AllocationStatus(AllocationState.RUNNING) for h in handles if h in running}
        return {h: known.get(h, AllocationStatus(AllocationState.UNKNOWN)) for h in handles}

    async def submit(self, request: AllocationRequest) -> str:
        self._ask("submit")
        handle = str(100 + len(self.calls))
        self.ours[request.replica_id] = handle
        return handle

    async def cancel(self, handle: str) -> None:
        self._ask("cancel")
        self.cancelled.append(handle)
        self.ours = {r: h for r, h in self.ours.items() if h != handle}

    async def start_delay(self, request: AllocationRequest) -> float | None:
        return 0.0

    def render(self, request: AllocationRequest) -> str:
        return ""

    async def aclose(self) -> None:
        return None


async def eventually(condition: Callable[[], object], timeout_s: float = 5) -> None:
    """Wait (on the event loop) until what the stack's callers do makes ``condition`` hold."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)
