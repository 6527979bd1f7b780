"""Lineage from S3: a key that reads or writes under an entry's prefix used or generated it.

The S3 server calls ``seen`` after each object read or write it served. That
runs on the data path, so it only looks the bucket up in a map of the
entries' prefixes and adds a new (key, entry, relation) to a set; once a
second a background task writes the new edges (a key scoped to one service
is that service's activity, else the key's own) and reloads the prefixes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aifactory.store import LineageEdge, Store

__all__ = ["S3Lineage"]

logger = logging.getLogger(__name__)

_FLUSH_S = 1.0
# Edges already recorded are remembered to skip them; past this many, start over
# (the store deduplicates anyway).
_MAX_REMEMBERED = 100_000

# (key id, entry tenant id, entry name, relation) -> the key's tenant id
_Mark = tuple[int, int, str, str]


class S3Caller(Protocol):
    """What the S3 server knows of who made a request."""

    @property
    def key_id(self) -> int | None: ...

    @property
    def tenant_id(self) -> int: ...


class S3Lineage:
    """Turns S3 object reads and writes under entries' prefixes into lineage edges.

    Args:
        store: Entries' prefixes, keys' scopes, and where edges are written.
        flush_s: How often new edges are written and prefixes reloaded.
    """

    def __init__(self, store: Store, flush_s: float = _FLUSH_S) -> None:
        self._store = store
        self._flush_s = flush_s
        # bucket -> [(key prefix, entry tenant id, entry name)]
        self._prefixes: dict[str, list[tuple[str, int, str]]] = {}
        self._remembered: set[_Mark] = set()
        self._pending: dict[_Mark, int] = {}
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: a slower one must not set prefixes older than a newer one's.
        self._flushing = asyncio.Lock()

    def seen(self, caller: S3Caller, bucket: str, key: str, write: bool) -> None:
        """An object ``key`` of ``bucket`` was read (or written) with ``caller``'s key."""
        entries = self._prefixes.get(bucket)
        if not entries or caller.key_id is None:
            return
        relation = "generated" if write else "used"
        for prefix, tenant_id, name in entries:
            if key.startswith(prefix):
                mark = (caller.key_id, tenant_id, name, relation)
                if mark not in self._remembered:
                    self._remembered.add(mark)
                    self._pending[mark] = caller.tenant_id

    def start(self) -> None:
        """Load the prefixes, then write new edges every ``flush_s``."""
        self._task = asyncio.create_task(self._run(), name="catalog-s3-lineage")

    async def stop(self) -> None:
        """Write what is pending and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            try:
                await self.flush()
            except Exception:
                logger.exception("recording S3 lineage failed; retrying")
            await asyncio.sleep(self._flush_s)

    async def flush(self) -> None:
        """Write the edges seen since the last flush; reload the entries' prefixes."""
        async with self._flushing:
            pending, self._pending = self._pending, {}
            if len(self._remembered) > _MAX_REMEMBERED:
                self._remembered = set(pending)
            self._prefixes = await asyncio.to_thread(self._write, pending)

    def _write(self, pending: dict[_Mark, int]) -> dict[str, list[tuple[str, int, str]]]:
        versions = {}
        prefixes: dict[str, list[tuple[str, int, str]]] = {}
        for bucket, prefix, tenant_id, name, latest in self._store.catalog_prefixes():
            prefixes.setdefault(bucket, []).append(
                (f"{prefix}/" if prefix else "", tenant_id, name)
            )
            versions[tenant_id, name] = latest
        edges = []
        for (key_id, tenant_id, name, relation), key_tenant_id in pending.items():
            kind, activity = self._store.key_activity(key_id)
            version = versions.get((tenant_id, name))
            edges.append(
                LineageEdge(tenant_id, name, version, relation, kind, activity, key_tenant_id, "s3")
            )
        if edges:
            self._store.add_lineage(edges)
        return prefixes
