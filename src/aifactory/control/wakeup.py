"""The reconciler's wake-up: the one way to ask for a tick now rather than at the next interval.

The control plane builds it first and hands it to whoever may need a
replica sooner than the interval allows::

    a request held at zero replicas (gateway -> fleet's hold queues)  demand(service): cold start
    a deploy or delete (control plane)                                now(): a spec changed
    tasks queued on a function pool (functions hub)                   now()
    a replica ended, was preempted or adopted (replica lifecycle)     now(): replace it at once

Only the reconciler's loop waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Wakeup"]


class Wakeup:
    """Asks the reconciler for its next tick now; many asks before it runs make one tick."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def now(self) -> None:
        """Run the next tick now."""
        self._event.set()

    def demand(self, service: str) -> None:
        """A request waits for a replica of ``service``: run the next tick now."""
        del service  # every tick converges every service; the name is for the reader
        self.now()

    async def wait(self, timeout_s: float) -> None:
        """Until asked, or ``timeout_s`` passes (the reconcile interval)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        self._event.clear()
