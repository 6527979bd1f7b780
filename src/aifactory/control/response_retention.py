"""Stored responses of the Responses API are deleted once past the site's retention.

The reconciler's tick calls ``sweep_if_due``; one sweep a minute at most, on a thread, so
the tick stays cheap. Until a sweep deletes a response, the gateway already treats it as
gone (``gateway/responses_api.StoredResponses``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from aifactory.store import ResponseQueries

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 60.0


class ResponseRetention:
    """Deletes responses older than ``retention_s``, at most every ``every_s`` seconds."""

    def __init__(
        self, store: ResponseQueries, retention_s: float, every_s: float = SWEEP_EVERY_S
    ) -> None:
        self._store = store
        self._retention = timedelta(seconds=retention_s)
        self._every_s = min(every_s, retention_s)
        self._last = -float("inf")

    async def sweep_if_due(self) -> int:
        """Delete what expired if the last sweep is old enough; how many were deleted."""
        now = time.monotonic()
        if now - self._last < self._every_s:
            return 0
        self._last = now
        cutoff = datetime.now(UTC) - self._retention
        deleted = await asyncio.to_thread(self._store.delete_responses_before, cutoff)
        if deleted:
            logger.info("deleted %d stored responses past their retention", deleted)
        return deleted
