"""Stored responses of the Responses API are deleted once past the site's retention.

The reconciler's tick calls ``sweep_if_due``: one sweep a minute at most, in a task of its
own on a thread, so that the tick never waits on it (nor fails with the database: the
reconciler reports that outage itself). Until a sweep deletes a response, the gateway
already treats it as gone (``gateway/responses_api.StoredResponses``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

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
        self._sweeping: asyncio.Task[int] | None = None

    def sweep_if_due(self) -> asyncio.Task[int] | None:
        """Start a sweep if the last is old enough and done; the sweep's task, or None."""
        now = time.monotonic()
        if now - self._last < self._every_s:
            return None
        if self._sweeping is not None and not self._sweeping.done():
            return None
        self._last = now
        self._sweeping = asyncio.create_task(self._sweep(), name="response-retention")
        return self._sweeping

    async def _sweep(self) -> int:
        cutoff = datetime.now(UTC) - self._retention
        try:
            deleted = await asyncio.to_thread(self._store.delete_responses_before, cutoff)
        except SQLAlchemyError as exc:
            logger.warning("stored responses not swept (retried next minute): %s", exc)
            return 0
        if deleted:
            logger.info("deleted %d stored responses past their retention", deleted)
        return deleted
