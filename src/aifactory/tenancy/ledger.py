"""The usage ledger: tokens, function calls, allocations, bytes, written in batches.

The gateway calls ``record`` on its hot path; that only adds numbers to the
pending row of the same tenant, key, kind, model and endpoint. A background
task writes the pending rows to the store every second (and at a clean
stop), so no request waits on a database write and a busy second is one row
per key and model, not one per request: each row counts the ``entries`` it
sums. A crash loses at most the last second's rows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aifactory.store import Store, utcnow

# tenant id, key id, kind, model, endpoint and the entry's text labels (its source)
_Key = tuple[Any, ...]

logger = logging.getLogger(__name__)


_ROW_FIELDS = {"tenant_id", "api_key_id", "kind", "model", "endpoint", "created_at", "entries"}


class UsageLedger:
    """Buffers usage rows and writes them to the store in batches."""

    def __init__(self, store: Store, flush_interval_s: float = 1.0) -> None:
        self._store = store
        self._interval_s = flush_interval_s
        self._pending: dict[_Key, dict[str, Any]] = {}
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
                ``bytes_out``, ``node_hours``, ``gpu_hours``, ``source``,
                ``activity`` (the job charged).
        """
        labels = tuple(sorted((k, v) for k, v in quantities.items() if isinstance(v, str)))
        self._add((tenant_id, key_id, kind, model, endpoint, labels), quantities, 1)

    def record_tokens(
        self,
        tenant_id: int,
        key_id: int | None,
        model: str,
        endpoint: str,
        prompt_tokens: int,
        completion_tokens: int,
        source: str = "",
    ) -> None:
        """``record`` a gateway request's tokens: the same row, without packing keywords.

        The gateway's hot path: ``record`` cost ~2% of its CPU per request.
        """
        key = (
            tenant_id,
            key_id,
            "tokens",
            model,
            endpoint,
            (("source", source),) if source else (),
        )
        row = self._pending.get(key)
        if row is None:
            quantities: dict[str, Any] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
            }
            if source:
                quantities["source"] = source
            self._add(key, quantities, 1)
            return
        row["entries"] += 1
        row["prompt_tokens"] = row.get("prompt_tokens", 0) + prompt_tokens
        row["completion_tokens"] = row.get("completion_tokens", 0) + completion_tokens

    def _add(self, key: _Key, quantities: dict[str, Any], entries: int) -> None:
        row = self._pending.get(key)
        if row is None:
            tenant_id, key_id, kind, model, endpoint, _labels = key
            self._pending[key] = {
                "tenant_id": tenant_id,
                "api_key_id": key_id,
                "kind": kind,
                "model": model,
                "endpoint": endpoint,
                "created_at": utcnow(),
                "entries": entries,
                **quantities,
            }
            return
        row["entries"] += entries
        for name, value in quantities.items():
            if not isinstance(value, str):
                row[name] = row.get(name, 0) + value

    async def flush(self) -> None:
        """Write everything queued so far."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await asyncio.to_thread(self._store.add_usage, list(pending.values()))
        except Exception:
            logger.exception(
                "writing %d usage rows failed; keeping them for the next flush", len(pending)
            )
            for key, row in pending.items():
                quantities = {k: v for k, v in row.items() if k not in _ROW_FIELDS}
                self._add(key, quantities, row["entries"])

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
