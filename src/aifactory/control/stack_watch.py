"""Which stacks can be asked now: each asked in its own task, never in the way of serving.

The reconciler never waits on a stack that does not answer. This watch asks
each stack for the allocations it runs for us (``Backend.tagged``: a
question that fails loudly, never with an empty answer), each question with
its own time limit::

    after a restart       until the first answer, which settles adoption
    after a doubtful call (a status poll that timed out or knew nothing, a
                          submit or cancel that failed): once, to tell an
                          outage from a hiccup
    during an outage      again and again, waiting longer each time

Every answer ends the stack's outage (``outages``) and goes to ``settled``,
which confirms restored replicas and cancels strays (allocations of ours that
no replica claims: a timed-out submit may still have made its job). A stack
*answers* once adoption on it is settled and no outage is under way; only
then does the reconciler poll it or start or replace anything on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aifactory.backends import Backend
from aifactory.control.outages import Outages, label
from aifactory.errors import AIFactoryError, SchedulerUnreachable

__all__ = ["StackWatch"]

logger = logging.getLogger(__name__)

_FIRST_RETRY_S = 1.0
_MAX_RETRY_S = 10.0
# However doubtful the calls, a stack that answers is asked at most this often.
_MIN_GAP_S = 5.0

Settle = Callable[[str, Mapping[str, str]], Awaitable[None]]


class _Stack:
    def __init__(self, adopting: bool) -> None:
        self.settled = not adopting
        self.doubted = True  # every stack is asked once when first watched: strays of old runs
        self.wake = asyncio.Event()
        self.wake.set()
        self.task: asyncio.Task[None] | None = None


class StackWatch:
    """Asks stacks what they run for us when there is reason to, and knows which answer.

    Args:
        backend: The backend called by a name.
        outages: Where failed and answered questions are recorded.
        settled: Given each answer: ``(stack, replica id -> handle)``.
        timeout_s: How long one question may take.
    """

    def __init__(
        self,
        backend: Callable[[str], Backend],
        outages: Outages,
        settled: Settle,
        timeout_s: float,
    ) -> None:
        self._backend = backend
        self._outages = outages
        self._settled = settled
        self._timeout_s = timeout_s
        self._stacks: dict[str, _Stack] = {}
        self._running = False

    def add(self, stacks: Iterable[str], adopting: bool = False) -> None:
        """Watch ``stacks`` (from now on; ``adopting``: restored replicas wait for its answer)."""
        for name in stacks:
            if name == "local" or name in self._stacks:
                continue  # local processes: this process knows them without asking
            self._stacks[name] = _Stack(adopting)
            self._outages.watch(name)
            if self._running:
                self._spawn(name)

    async def start(self) -> None:
        """Start asking (each watched stack once, then when there is reason to)."""
        self._running = True
        for name in self._stacks:
            self._spawn(name)

    async def stop(self) -> None:
        """Stop asking."""
        self._running = False
        tasks = [s.task for s in self._stacks.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def answers(self, stack: str) -> bool:
        """Whether ``stack`` may be polled and used: adoption settled, no outage under way."""
        state = self._stacks.get(stack)
        if state is None:
            return True
        return state.settled and self._outages.of(stack) is None

    def blocker(self, stacks: Iterable[str]) -> str:
        """Why nothing may start on ``stacks`` now, in words ("" when nothing stops it)."""
        for name in stacks:
            outage = self._outages.of(name)
            if outage is not None:
                return outage.message
            state = self._stacks.get(name)
            if state is not None and not state.settled:
                return f"waiting for {label(name)} to list the replicas of the earlier run"
        return ""

    def doubt(self, stack: str) -> None:
        """A call to ``stack`` went wrong or learnt nothing: ask it soon."""
        state = self._stacks.get(stack)
        if state is not None:
            state.doubted = True
            state.wake.set()

    def failed(self, stack: str, error: str, asked_at: float) -> None:
        """A call to ``stack`` asked at ``asked_at`` got no answer at all."""
        if stack in self._stacks:
            self._outages.failed(stack, error, asked_at)
            self.doubt(stack)

    def call_failed(self, stack: str, error: Exception, asked_at: float) -> None:
        """A call to ``stack`` failed: unanswered, an outage; refused, a doubt to settle."""
        if isinstance(error, SchedulerUnreachable):
            self.failed(stack, error.message, asked_at)
        else:
            self.doubt(stack)

    def _spawn(self, name: str) -> None:
        state = self._stacks[name]
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._run(name, state), name=f"stack-watch-{name}")

    async def _run(self, name: str, state: _Stack) -> None:
        retry_s = _FIRST_RETRY_S
        while True:
            await state.wake.wait()
            state.wake.clear()
            if not (state.doubted or not state.settled or self._outages.of(name)):
                continue
            state.doubted = False
            if await self._ask(name, state):
                retry_s = _FIRST_RETRY_S
                await asyncio.sleep(_MIN_GAP_S)
            else:
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, _MAX_RETRY_S)
                state.wake.set()

    async def _ask(self, name: str, state: _Stack) -> bool:
        asked_at = time.time()
        try:
            ours = await asyncio.wait_for(self._backend(name).tagged(), self._timeout_s)
        except TimeoutError:
            error = f"no list of our allocations within {self._timeout_s:g} s"
            self._outages.failed(name, error, asked_at)
            return False
        except Exception as exc:  # whatever it was, it is no answer: nothing is taken for gone
            if not isinstance(exc, AIFactoryError):
                logger.exception("asking %s what it runs failed", label(name))
            error = exc.message if isinstance(exc, AIFactoryError) else repr(exc)
            self._outages.failed(name, error, asked_at)
            return False
        self._outages.answered(name)
        try:
            await self._settled(name, ours)
        except Exception:
            # The answer stands; settling is tried again with the next one.
            logger.exception("settling what %s runs failed; asking again", label(name))
            self.doubt(name)
            return True
        state.settled = True
        return True
