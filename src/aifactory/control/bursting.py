"""Burst decisions: ask each stack how soon it could start a replica, remember the answer.

The reconciler calls ``Bursting.estimates`` only for a burst replica of a
service with more than one stack (``placement.burst_stacks``), and, at most
every ``_RECHECK_S`` per service, for a burst replica still waiting for its
allocation (``placement.waiting_burst``); the stacks are asked together,
each with the exact request it would be sent, so the estimate covers the
tenant's partition, account and resources. The latest decisions per
service are kept for ``aif status`` and the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aifactory.backends import AllocationRequest, Backend
from aifactory.errors import AIFactoryError
from aifactory.specs import Deployable

logger = logging.getLogger(__name__)

_KEPT = 10
_RECHECK_S = 15.0


@dataclass(frozen=True)
class BurstDecision:
    """Where one burst replica went, and what each stack estimated."""

    at: float
    stack: str
    delays: dict[str, float | None]
    moved_from: str = ""


class Bursting:
    """Start estimates for burst replicas, from the backends themselves.

    Args:
        request_for: The allocation request a replica of a service would
            send to a stack (tenant defaults applied).
        backend: The backend called by a name.
    """

    def __init__(
        self,
        request_for: Callable[[Deployable, str], AllocationRequest],
        backend: Callable[[str], Backend],
    ) -> None:
        self._request_for = request_for
        self._backend = backend
        self._decisions: dict[str, deque[BurstDecision]] = {}
        self._checked: dict[str, float] = {}

    async def estimates(
        self, service: Deployable, stacks: Sequence[str]
    ) -> dict[str, float | None]:
        """Seconds until each of ``stacks`` could start a replica of ``service`` (None: unknown)."""
        answers = await asyncio.gather(*(self._delay(service, stack) for stack in stacks))
        return dict(zip(stacks, answers, strict=True))

    def record(
        self, service: str, stack: str, delays: dict[str, float | None], moved_from: str = ""
    ) -> None:
        """Note that a burst replica of ``service`` went (or moved) to ``stack``."""
        kept = self._decisions.setdefault(service, deque(maxlen=_KEPT))
        kept.append(BurstDecision(time.time(), stack, delays, moved_from))
        logger.info(
            "service %s: burst replica %s %s (start estimates: %s)",
            service, f"moved from {moved_from} to" if moved_from else "to", stack,
            ", ".join(f"{s} {_words(d)}" for s, d in delays.items()),
        )  # fmt: skip

    def due(self, service: str) -> bool:
        """Whether a waiting replica of ``service`` may be checked again now (and note it)."""
        now = time.monotonic()
        if now - self._checked.get(service, 0.0) < _RECHECK_S:
            return False
        self._checked[service] = now
        return True

    def decisions(self, service: str) -> list[BurstDecision]:
        """The latest burst decisions for ``service``, oldest first."""
        return list(self._decisions.get(service, ()))

    def forget(self, service: str) -> None:
        """Drop a deleted service's decisions."""
        self._decisions.pop(service, None)
        self._checked.pop(service, None)

    async def _delay(self, service: Deployable, stack: str) -> float | None:
        try:
            return await self._backend(stack).start_delay(self._request_for(service, stack))
        except AIFactoryError as exc:
            logger.info("service %s: no start estimate from %s: %s", service.name, stack, exc)
            return None


def _words(delay: float | None) -> str:
    return "unknown" if delay is None else f"{delay:.0f} s"
