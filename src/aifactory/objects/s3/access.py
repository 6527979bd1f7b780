"""Who may use which bucket: owners, grants and admins, with a short cache.

A bucket created through S3 or ``aifactory buckets create`` belongs to a
tenant (a row in the store). Its owner may do everything; tenants it is
shared with get ``read`` or ``write`` on its objects; admin keys may use
every bucket, including directories that appeared under the root without
going through aifactory (those have no owner and are admin-only).
"""

from __future__ import annotations

import asyncio
import time

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.multipart import Multipart
from aifactory.objects.posix.paths import check_bucket_name
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3.auth import Caller
from aifactory.objects.s3.room import StorageRoom
from aifactory.store import BucketRecord, Store
from aifactory.tenancy import Action, QuotaExceeded, Quotas, grants

_CACHE_TTL_S = 5.0
_CACHE_MAX = 10_000
ACCESS_LEVELS = ("read", "write")


class BucketRegistry:
    """Bucket ownership (in the store) checked against callers."""

    def __init__(self, store: Store, files: FileStore, multipart: Multipart) -> None:
        self._store = store
        self._files = files
        self._multipart = multipart
        self._cache: dict[str, tuple[float, BucketRecord | None]] = {}
        self._quotas = Quotas(store)
        self.room = StorageRoom(store, files, self.record)

    async def record(self, bucket: str) -> BucketRecord | None:
        """The bucket's row, cached for a few seconds."""
        now = time.monotonic()
        cached = self._cache.get(bucket)
        if cached is None or cached[0] <= now:
            record = await asyncio.to_thread(self._store.bucket, bucket)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            cached = (now + _CACHE_TTL_S, record)
            self._cache[bucket] = cached
        return cached[1]

    def forget(self, bucket: str) -> None:
        """Drop the cached row (and owner) of a bucket that changed."""
        self._cache.pop(bucket, None)
        self._files.owners.forget(bucket)

    async def authorize(self, caller: Caller, bucket: str, write: bool) -> None:
        """Raise unless ``caller`` may read (or write) objects of ``bucket``.

        Raises:
            S3Error: InvalidBucketName, NoSuchBucket or AccessDenied.
        """
        check_bucket_name(bucket)
        if not caller.reaches(bucket):
            raise _denied(bucket, "This key is scoped to other buckets.")
        record = await self.record(bucket)
        if record is None:
            if not await asyncio.to_thread(self._files.bucket_exists, bucket):
                raise S3Error("NoSuchBucket", resource=bucket)
            if caller.is_admin:
                return
            raise _denied(bucket)
        if caller.is_admin or record.tenant_id == caller.tenant_id:
            return
        granted = record.grants.get(caller.tenant)
        if granted == "write" or (granted == "read" and not write):
            return
        raise _denied(bucket)

    async def create(self, caller: Caller, bucket: str) -> None:
        """Create ``bucket`` owned by the caller's tenant, within its bucket quota.

        Raises:
            S3Error: AccessDenied (a key that may not deploy, or is scoped to
                other buckets), TooManyBuckets, or as ``create_for``.
        """
        _may_manage(caller, bucket)
        if not caller.is_admin:
            try:
                await asyncio.to_thread(self._quotas.check_bucket, caller.tenant_id, caller.tenant)
            except QuotaExceeded as exc:
                raise S3Error("TooManyBuckets", exc.message, fix=exc.fix, resource=bucket) from exc
        await self.create_for(caller.tenant_id, bucket, caller.is_admin)

    async def create_for(self, tenant_id: int, bucket: str, is_admin: bool = False) -> None:
        """Create ``bucket`` owned by ``tenant_id``.

        Raises:
            S3Error: InvalidBucketName, BucketAlreadyOwnedByYou or BucketAlreadyExists.
        """
        check_bucket_name(bucket)
        self.forget(bucket)
        record = await self.record(bucket)
        if record is not None:
            if record.tenant_id == tenant_id:
                raise S3Error("BucketAlreadyOwnedByYou", resource=bucket)
            raise S3Error("BucketAlreadyExists", resource=bucket)
        if await asyncio.to_thread(self._files.bucket_exists, bucket) and not is_admin:
            raise S3Error("BucketAlreadyExists", resource=bucket)
        if not await asyncio.to_thread(self._store.add_bucket, bucket, tenant_id):
            raise S3Error("BucketAlreadyExists", resource=bucket)
        self.forget(bucket)
        try:
            await asyncio.to_thread(self._files.create_bucket, bucket)
        except BaseException:
            # e.g. the tenant has no Unix identity: no row without its directory.
            await asyncio.to_thread(self._store.remove_bucket, bucket)
            self.forget(bucket)
            raise

    async def delete(self, caller: Caller, bucket: str) -> None:
        """Delete an empty bucket the caller owns (or any, for an admin)."""
        _may_manage(caller, bucket)
        await self.authorize(caller, bucket, write=True)
        record = await self.record(bucket)
        if record is not None and not caller.is_admin and record.tenant_id != caller.tenant_id:
            raise _denied(bucket)
        await self.remove(bucket)

    async def remove(self, bucket: str) -> None:
        """Delete an empty bucket, its staged uploads and its row."""
        await asyncio.to_thread(self._files.delete_bucket, bucket)
        await asyncio.to_thread(self._multipart.drop_bucket, bucket)
        await asyncio.to_thread(self._store.remove_bucket, bucket)
        self.forget(bucket)

    async def visible(self, caller: Caller) -> list[tuple[str, float]]:
        """The buckets ``caller`` may use, with their creation times."""
        on_disk = await asyncio.to_thread(self._files.bucket_names)
        if caller.is_admin:
            return on_disk
        records = {r.name: r for r in await asyncio.to_thread(self._store.buckets)}
        return [
            (name, created)
            for name, created in on_disk
            if name in records
            and caller.reaches(name)
            and (
                records[name].tenant_id == caller.tenant_id or caller.tenant in records[name].grants
            )
        ]


def _may_manage(caller: Caller, bucket: str) -> None:
    """Refuse creating or deleting ``bucket`` to a key that may not (inference, or scoped)."""
    if not grants(caller.role, Action.DEPLOY):
        raise S3Error(
            "AccessDenied",
            f"A {caller.role!r} key reads and writes objects; it cannot create or delete buckets.",
            fix="use a key of role 'member' or above",
            resource=bucket,
        )
    if not caller.reaches(bucket):
        raise _denied(bucket, "This key is scoped to other buckets.")


def _denied(bucket: str, why: str = "") -> S3Error:
    return S3Error(
        "AccessDenied",
        why or f"Your tenant has no access to bucket {bucket!r}.",
        fix="ask its owner or an admin to share it (`aifactory buckets share`)",
        resource=bucket,
    )
