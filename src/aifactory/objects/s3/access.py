"""Who may use which bucket: owners, grants and admins, with a short cache.

A bucket created through S3 or ``aifactory buckets create`` belongs to a
tenant (a row in the store). Its owner may do everything; tenants it is
shared with get ``read`` or ``write`` on its objects; admin keys may use
every bucket, including directories that appeared under the root without
going through aifactory (those have no owner and are admin-only). A bucket
readable by a group (``acl.py``: AllUsers, AuthenticatedUsers) is listed by
unsigned callers or by any tenant, as on S3: its objects' bytes are read
only by whom their own ACL names (or under a prefix the catalog published).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aifactory.errors import ConfigError
from aifactory.objects.errors import S3Error
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.multipart import Multipart
from aifactory.objects.posix.paths import check_bucket_name
from aifactory.objects.posix.sharing import BucketSharing
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3 import acl
from aifactory.objects.s3.auth import Caller
from aifactory.objects.s3.public import PublicPrefixes
from aifactory.objects.s3.room import StorageRoom
from aifactory.store import BucketRecord, Store
from aifactory.tenancy import Action, QuotaExceeded, Quotas, grants

_CACHE_TTL_S = 5.0
_CACHE_MAX = 10_000
ACCESS_LEVELS = ("read", "write")


@dataclass(frozen=True)
class ObjectReadCheck:
    """What a read of one object must still pass: its own ACL.

    ``lists``: the caller may list the bucket, so may learn a key is absent.
    """

    reads: Callable[[ObjectMeta], bool]
    lists: bool


class BucketRegistry:
    """Bucket ownership (in the store) checked against callers."""

    def __init__(
        self,
        store: Store,
        files: FileStore,
        multipart: Multipart,
        sharing: BucketSharing | None = None,
    ) -> None:
        self._store = store
        self._files = files
        self._multipart = multipart
        self._sharing = sharing
        self.public: PublicPrefixes | None = None
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

    async def authorize(
        self, caller: Caller, bucket: str, write: bool, listing: bool = False
    ) -> None:
        """Raise unless ``caller`` may read (or write) objects of ``bucket``.

        ``listing``: only the bucket's keys are read (a listing, HeadBucket), which
        a group's read grant allows too; the objects' bytes need more.

        Raises:
            S3Error: InvalidBucketName, NoSuchBucket or AccessDenied.
        """
        check_bucket_name(bucket)
        if not caller.anonymous and not caller.reaches(bucket):
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
        granted = None if caller.anonymous else record.grants.get(caller.tenant)
        if granted == "write" or (
            not write and (granted == "read" or (listing and _group_reads(caller, record.grants)))
        ):
            return
        raise _denied(bucket)

    async def authorize_object_read(
        self, caller: Caller, bucket: str, key: str
    ) -> ObjectReadCheck | None:
        """Check a read of one object: None when that is all, else what its metadata must pass.

        The check returned is the object's own ACL, for callers the bucket does not admit.

        Raises:
            S3Error: as ``authorize``, when neither the bucket, the catalog nor
                an object's ACL could let the caller read.
        """
        try:
            await self.authorize(caller, bucket, write=False)
            return None
        except S3Error as exc:
            if exc.code != "AccessDenied":
                raise
            record = await self.record(bucket)
            if record is None:
                raise
            if self.public is not None and await self.public.is_public(
                bucket, record.tenant_id, key
            ):
                return None
            if not caller.anonymous and not caller.reaches(bucket):
                raise
        lists = _group_reads(caller, record.grants)
        return ObjectReadCheck(lambda meta: acl.reads(meta.acl, caller), lists)

    async def owner(self, caller: Caller, bucket: str) -> str:
        """The tenant owning ``bucket``, when the caller may manage its ACLs (owner or admin).

        Raises:
            S3Error: NoSuchBucket, or AccessDenied for anyone else.
        """
        _may_manage(caller, bucket)
        record = await self.record(bucket)
        if record is None:
            await self.authorize(caller, bucket, write=True)  # admin-only directories
            return caller.tenant
        if not caller.is_admin and record.tenant_id != caller.tenant_id:
            raise _denied(bucket, "Only the bucket's tenant manages its ACLs.")
        return record.tenant

    async def set_grants(self, bucket: str, grants: acl.Grants) -> None:
        """Replace the grants of ``bucket`` (POSIX ACLs follow, through ``BucketSharing``).

        Raises:
            S3Error: NotImplemented for an ownerless directory (no grants to keep);
                InternalError when the filesystem refused the ACLs.
        """
        record = await self.record(bucket)
        if record is None:
            raise S3Error(
                "NotImplemented",
                "This directory has no owner tenant, so it keeps no grants.",
                fix="adopt it with `aifactory buckets create` first",
                resource=bucket,
            )
        changes: dict[str, str | None] = {t: None for t in record.grants if t not in grants}
        changes.update({t: level for t, level in grants.items() if record.grants.get(t) != level})
        try:
            for tenant, level in changes.items():
                if self._sharing is not None:
                    await asyncio.to_thread(self._sharing.set, bucket, tenant, level)
                else:
                    await asyncio.to_thread(self._store.set_bucket_grant, bucket, tenant, level)
        except ConfigError as exc:
            raise S3Error("InternalError", exc.message, fix=exc.fix, resource=bucket) from exc
        finally:
            self.forget(bucket)

    def tenant_exists(self, name: str) -> bool:
        """Whether a tenant is named ``name`` (blocking)."""
        return self._store.tenant(name) is not None

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
        if caller.anonymous:
            return []
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


def _group_reads(caller: Caller, grants: acl.Grants) -> bool:
    return acl.ALL_USERS in grants or (not caller.anonymous and acl.AUTHENTICATED in grants)


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
