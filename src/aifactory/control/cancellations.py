"""Allocations that must go: cancelled, and cancelled again until their stack confirms it.

A replica that failed, drained or was found stray after a restart must not
keep running beside its replacement. A cancel that gets no answer (the
scheduler is down, the API server does not answer) is not a cancel: it is
tried again, waiting longer each time, until the stack answers. A
control plane that stops before then leaves the job to the next one, which
finds it by its tag and cancels it as a stray (``adoption``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aifactory.backends import Backend
from aifactory.errors import AIFactoryError

logger = logging.getLogger(__name__)

_FIRST_RETRY_S = 1.0
_MAX_RETRY_S = 30.0
# On close, a cancel under way gets this long to finish its current try.
_CLOSE_GRACE_S = 5.0


class Cancellations:
    """Cancels allocations, retrying each until its stack confirms.

    Args:
        backend: The backend called by a name.
        failed: Told ``(stack, error, Unix time asked)`` of each cancel that failed.
    """

    def __init__(
        self,
        backend: Callable[[str], Backend],
        failed: Callable[[str, Exception, float], None],
    ) -> None:
        self._backend = backend
        self._failed = failed
        self._closed = asyncio.Event()
        self._running: dict[tuple[str, str], asyncio.Task[bool]] = {}

    @property
    def pending(self) -> set[tuple[str, str]]:
        """The ``(stack, handle)`` pairs whose cancel is not confirmed yet."""
        return set(self._running)

    def cancel(self, stack: str, handle: str) -> asyncio.Future[bool]:
        """Start cancelling ``handle`` on ``stack`` (once, however often asked).

        Await the result to wait until the stack confirmed it (True), or until
        ``close`` gave up on it (False, or cancelled).
        """
        key = (stack, handle)
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._until_confirmed(stack, handle))
            self._running[key] = task
            task.add_done_callback(lambda _done: self._running.pop(key, None))
        return asyncio.shield(task)

    async def _until_confirmed(self, stack: str, handle: str) -> bool:
        delay = _FIRST_RETRY_S
        while not self._closed.is_set():
            asked_at = time.time()
            try:
                await self._backend(stack).cancel(handle)
                return True
            except Exception as exc:  # whatever went wrong, the job may still run: try again
                reason = exc.message if isinstance(exc, AIFactoryError) else repr(exc)
                self._failed(stack, exc, asked_at)
                logger.warning(
                    "cancelling %s on %s failed (retrying in %.0f s): %s",
                    handle, stack, delay, reason,
                )  # fmt: skip
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, _MAX_RETRY_S)
        return False

    async def close(self) -> None:
        """Stop retrying: the next control plane cancels what is left, by its tag."""
        self._closed.set()
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=_CLOSE_GRACE_S)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
