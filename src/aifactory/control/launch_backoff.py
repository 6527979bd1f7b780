"""When each service may next try to start a replica, and what it waits for.

A failed start backs off exponentially (1, 2, 4 … 60 s) until a replica of
the service becomes ready; a full cluster or a spent budget waits a fixed
time. The reason is what ``aif status`` shows as the service's pending reason.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 60.0


class LaunchBackoff:
    """Per-service launch gate: back-off after failures, waits with a reason."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def may_launch(self, service: str) -> bool:
        """Whether ``service`` may try to start a replica now."""
        return time.monotonic() >= self._retry_at.get(service, 0.0)

    def failed(self, service: str, reason: str) -> None:
        """A start of ``service`` failed: wait twice as long as after the last failure."""
        count = self._failures.get(service, 0) + 1
        self._failures[service] = count
        delay = min(_MAX_BACKOFF_S, 2.0 ** (count - 1))
        self._retry_at[service] = time.monotonic() + delay
        self.reasons[service] = f"{reason} (retrying in {delay:.0f}s)"
        logger.warning("service %s: %s; next try in %.0fs", service, reason, delay)

    def wait(self, service: str, reason: str, seconds: float) -> None:
        """``service`` cannot start a replica for ``reason``; try again in ``seconds``."""
        self.reasons[service] = reason
        self._retry_at[service] = time.monotonic() + seconds

    def submitted(self, service: str) -> None:
        """A replica of ``service`` was accepted by its backend: nothing is pending."""
        self.reasons.pop(service, None)

    def forgive(self, service: str) -> None:
        """A replica of ``service`` became ready: its failures no longer count."""
        self._failures[service] = 0

    def forget(self, service: str) -> None:
        """``service`` was deleted."""
        self._failures.pop(service, None)
        self._retry_at.pop(service, None)
        self.reasons.pop(service, None)
