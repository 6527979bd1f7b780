"""The usage ledger: tokens, function calls, allocations, bytes, written in batches.

The gateway calls ``record`` on its hot path; that only appends to a list.
A background task flushes the list to the store every second, so no request
waits on a database write.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aifactory.store import Store, utcnow

logger = logging.getLogger(__name__)


class UsageLedger:
    """Buffers usage rows and writes them to the store in batches."""

    def __init__(self, store: Store, flush_interval_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = flush_interval_s
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        *,
        tenant_id: int,
        key_id: int | None,
        model: str,
        endpoint: str,
        kind: str = "tokens",
        **quantities: float | str,
    ) -> None:
        """Queue one ledger entry for the next flush.

        Args:
            tenant_id: Who is charged.
            key_id: The key that acted, if one did.
            model: The model, function, bucket or service used.
            endpoint: What was done (``chat.completions``, ``replica.slurm``, …).
            kind: ``tokens``, ``function``, ``allocation`` or ``objects``.
            **quantities: Columns of the entry: ``prompt_tokens``,
                ``completion_tokens``, ``calls``, ``seconds``, ``bytes_in``,
                ``bytes_out``, ``node_hours``, ``gpu_hours``, ``source``.
        """
        self._pending.append(
            {
                "tenant_id": tenant_id,
                "api_key_id": key_id,
                "kind": kind,
                "model": model,
                "endpoint": endpoint,
                "created_at": utcnow(),
                **quantities,
            }
        )

    async def flush(self) -> None:
        """Write everything queued so far."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._store.add_usage, batch)
        except Exception:
            logger.exception(
                "writing %d usage rows failed; keeping them for the next flush", len(batch)
            )
            self._pending[:0] = batch

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    def start(self) -> None:
        """Start the periodic flush."""
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    async def stop(self) -> None:
        """Stop the periodic flush and write what is left."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
