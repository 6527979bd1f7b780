"""A tenant's bytes quota: what its buckets hold, measured now and then, kept current between.

The bytes a tenant's buckets hold (with the older versions they keep) are
counted on the filesystem at most every ``_RECOUNT_S`` seconds (a walk of
its buckets) and every byte written through this server is added at once,
so a quota holds to within what other writers (a job writing the tree over
POSIX) add between two counts. A write is refused when what is held plus
what it declares (its Content-Length) would pass the quota; overwrites
count as new bytes until the next count.
A count adds what else holds the tenant's bytes (``other``: the catalog's
kept versions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aifactory.objects.errors import S3Error
from aifactory.objects.holdings import OtherHoldings
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.posix.tally import count_files
from aifactory.store import BucketRecord, Store

__all__ = ["StorageRoom"]

_RECOUNT_S = 30.0
_QUOTA_TTL_S = 5.0


class StorageRoom:
    """Checks writes against the bytes quota of the bucket's owning tenant.

    Args:
        store: Where quotas and bucket owners are kept.
        files: The buckets' tree.
        record: The (cached) owner record of a bucket.
    """

    def __init__(
        self,
        store: Store,
        files: FileStore,
        record: Callable[[str], Awaitable[BucketRecord | None]],
    ) -> None:
        self._store = store
        self._files = files
        self._record = record
        self._held: dict[int, tuple[float, int]] = {}
        self._quotas: dict[int, tuple[float, int | None]] = {}
        self.other: OtherHoldings | None = None

    async def check(self, bucket: str, incoming: int) -> None:
        """Returns when ``incoming`` more bytes in ``bucket`` fit its tenant's quota.

        Raises:
            S3Error: QuotaExceeded, naming the quota, what is held and the write's size.
        """
        record = await self._record(bucket)
        if record is None:
            return  # a directory without an owner: admins only, no tenant's quota
        quota = await self._quota(record.tenant_id)
        if quota is None:
            return
        held = await self._held_by(record.tenant_id)
        if held + incoming > quota:
            raise S3Error(
                "QuotaExceeded",
                f"Tenant {record.tenant!r} may hold {quota} bytes in its buckets; they hold "
                f"{held} and this write brings {incoming} ({max(0, quota - held)} left).",
                fix="delete objects, or ask the site for a larger bytes quota",
                resource=bucket,
            )

    async def wrote(self, bucket: str, count: int) -> None:
        """Count ``count`` bytes just written to ``bucket`` until its tenant's next count."""
        record = await self._record(bucket)
        if record is None or count <= 0 or record.tenant_id not in self._held:
            return
        at, held = self._held[record.tenant_id]
        self._held[record.tenant_id] = (at, held + count)

    async def _quota(self, tenant_id: int) -> int | None:
        now = time.monotonic()
        cached = self._quotas.get(tenant_id)
        if cached is None or cached[0] <= now:
            quotas = await asyncio.to_thread(self._store.quotas_of, tenant_id)
            cached = (now + _QUOTA_TTL_S, quotas.bytes)
            self._quotas[tenant_id] = cached
        return cached[1]

    async def _held_by(self, tenant_id: int) -> int:
        now = time.monotonic()
        cached = self._held.get(tenant_id)
        if cached is None or cached[0] <= now:
            held = await asyncio.to_thread(self._count, tenant_id)
            cached = (now + _RECOUNT_S, held)
            self._held[tenant_id] = cached
        return cached[1]

    def _count(self, tenant_id: int) -> int:
        buckets = [r.name for r in self._store.buckets() if r.tenant_id == tenant_id]
        return self._held_elsewhere(tenant_id) + sum(
            count_files(self._files.bucket_dir(name), limit=None)[1]
            + count_files(self._files.versions.bucket_dir(name), limit=None)[1]
            for name in buckets
            if self._files.bucket_exists(name)
        )

    def _held_elsewhere(self, tenant_id: int) -> int:
        return self.other.bytes_held(tenant_id) if self.other is not None else 0
