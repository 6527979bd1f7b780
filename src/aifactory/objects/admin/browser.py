"""The dashboard's way into the buckets, through the S3 handlers' own paths.

A dashboard request carries an API key (a ``Principal``), not an S3
signature. It becomes the same ``Caller`` S3 would see and passes the same
``BucketRegistry.authorize``, so a key reaches exactly the buckets its S3
credentials reach. Listings come from ``listing.list_page`` with
ListObjectsV2's continuation tokens; uploads stream through PutObject's
``receive_object`` (batched, hashed, written to a temporary file and renamed
into place); downloads read through the same I/O pool, a megabyte at a time.

::

    web endpoint -(Principal)-> BucketBrowser -> authorize -> list_page
                                                           -> receive_object -> FileWriter
                                                           -> FileStore.open -> ObjectDownload
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.types import Message, Receive

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.listing import MAX_KEYS, list_page
from aifactory.objects.posix.metadata import DEFAULT_CONTENT_TYPE, ObjectMeta
from aifactory.objects.posix.paths import check_key, is_directory_key
from aifactory.objects.s3.access import BucketRegistry
from aifactory.objects.s3.app import UsageHook
from aifactory.objects.s3.auth import Caller, PayloadCheck
from aifactory.objects.s3.bucket_ops import continuation_token, resume
from aifactory.objects.s3.context import READ_BYTES, Context, Services
from aifactory.objects.s3.object_ops import receive_object
from aifactory.objects.s3.request import S3Request
from aifactory.tenancy import Principal

T = TypeVar("T")


class BucketBrowser:
    """List, upload, download and delete objects, and create buckets, for API-key callers.

    Args:
        services: The S3 app's stores, I/O pool and counters (shared with S3).
        on_usage: Told who moved how many bytes in and out of which bucket.
    """

    def __init__(self, services: Services, on_usage: UsageHook | None = None) -> None:
        self._services = services
        self._on_usage = on_usage

    @property
    def _registry(self) -> BucketRegistry:
        return self._services.buckets

    async def create_bucket(self, principal: Principal, bucket: str) -> None:
        """Create ``bucket`` owned by the caller's tenant.

        Raises:
            S3Error: InvalidBucketName, BucketAlreadyOwnedByYou or BucketAlreadyExists.
        """
        caller = caller_of(principal)
        await self._registry.create(caller, bucket)
        self._charge(caller, bucket, "CreateBucket")

    async def list_objects(
        self,
        principal: Principal,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        token: str = "",
        max_keys: int = MAX_KEYS,
    ) -> dict[str, Any]:
        """One page of ``bucket``'s keys under ``prefix``, folded at ``delimiter``.

        Returns:
            ``{"bucket", "prefix", "delimiter", "objects": [{key, size, modified,
            etag, content_type}], "prefixes": [str], "next": token or None}``.

        Raises:
            S3Error: NoSuchBucket, AccessDenied, InvalidBucketName, or
                InvalidArgument for a bad token.
        """
        caller = caller_of(principal)
        await self._registry.authorize(caller, bucket, write=False)
        after, skip = resume(token) if token else ("", "")
        max_keys = max(1, min(max_keys, MAX_KEYS))
        page = await _run(
            self._services,
            list_page,
            self._services.files,
            bucket,
            prefix,
            delimiter,
            max_keys,
            after,
            skip,
        )
        self._charge(caller, bucket, "ListObjectsV2")
        return {
            "bucket": bucket,
            "prefix": prefix,
            "delimiter": delimiter,
            "objects": [
                {
                    "key": info.key,
                    "size": 0 if is_directory_key(info.key) else info.st.st_size,
                    "modified": info.st.st_mtime,
                    "etag": info.meta.etag,
                    "content_type": info.meta.content_type,
                }
                for info in page.objects
            ],
            "prefixes": page.prefixes,
            "next": continuation_token(page) if page.truncated else None,
        }

    async def put_object(
        self, principal: Principal, bucket: str, key: str, content_type: str, receive: Receive
    ) -> dict[str, Any]:
        """Stream a request body (``receive``) into a new object at ``key``, like PutObject.

        Returns:
            ``{"bucket", "key", "size", "etag"}`` of the stored object.

        Raises:
            S3Error: from the bucket check, the key check, or the write (EntityTooLarge,
                IncompleteBody, ObjectParentIsFile, ExistingObjectIsDirectory).
        """
        caller = await authorize_file_write(self._registry, principal, bucket, key)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        headers = {"content-type": [content_type or DEFAULT_CONTENT_TYPE]}
        context = self._context(caller, "PUT", bucket, key, headers, counting_receive)
        meta = ObjectMeta("", 0, 0, content_type or DEFAULT_CONTENT_TYPE)
        try:
            stored = await receive_object(context, meta)
        finally:
            self._charge(caller, bucket, "PutObject", received)
        return {"bucket": bucket, "key": key, "size": stored.size, "etag": stored.etag}

    async def get_object(self, principal: Principal, bucket: str, key: str) -> ObjectDownload:
        """An open object to stream; the caller must ``aclose`` it.

        Raises:
            S3Error: from the bucket check, the key check, or NoSuchKey.
        """
        caller = caller_of(principal)
        await self._registry.authorize(caller, bucket, write=False)
        check_key(key)
        if is_directory_key(key):
            raise S3Error(
                "InvalidArgument",
                f"The key {key!r} names a folder; only files download.",
                fix="open the folder and download the files in it",
                resource=key,
            )
        fd, info = await _run(self._services, self._services.files.open, bucket, key)

        def charge(sent: int) -> None:
            self._charge(caller, bucket, "GetObject", 0, sent)

        return ObjectDownload(
            key=key,
            size=info.st.st_size,
            etag=info.meta.etag,
            content_type=info.meta.content_type,
            modified=info.st.st_mtime,
            fd=fd,
            services=self._services,
            on_close=charge,
        )

    async def delete_object(self, principal: Principal, bucket: str, key: str) -> None:
        """Delete the object at ``key`` (nothing to do when it is absent).

        Raises:
            S3Error: from the bucket check or the key check.
        """
        caller = caller_of(principal)
        await self._registry.authorize(caller, bucket, write=True)
        check_key(key)
        await _run(self._services, self._services.files.versions.remove, bucket, key)
        self._charge(caller, bucket, "DeleteObject")

    def _context(
        self,
        caller: Caller,
        method: str,
        bucket: str,
        key: str,
        headers: dict[str, list[str]],
        receive: Receive,
    ) -> Context:
        request = S3Request(method, "", f"/{bucket}/{key}", bucket, key, [], headers, False, "")
        return Context(request, caller, PayloadCheck(), receive, _no_send, self._services, [])

    def _charge(
        self, caller: Caller, bucket: str, operation: str, sent: int = 0, got: int = 0
    ) -> None:
        if self._on_usage is not None:
            self._on_usage(caller, bucket, operation, sent, got)


class ObjectDownload:
    """An object opened for reading: its headers' values and its bytes, read on demand."""

    def __init__(
        self,
        *,
        key: str,
        size: int,
        etag: str,
        content_type: str,
        modified: float,
        fd: int,
        services: Services,
        on_close: Callable[[int], None],
    ) -> None:
        self.key = key
        self.size = size
        self.etag = etag
        self.content_type = content_type
        self.modified = modified
        self._fd = fd
        self._services = services
        self._on_close = on_close
        self._sent = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The object's bytes, a megabyte at a time, from the descriptor opened with it."""
        while self._sent < self.size:
            wanted = min(READ_BYTES, self.size - self._sent)
            data = await _run(self._services, os.pread, self._fd, wanted, self._sent)
            if not data:
                raise S3Error("InternalError", "The file shrank while it was being sent.")
            self._sent += len(data)
            self._services.stats.bytes_out += len(data)
            yield data

    async def aclose(self) -> None:
        """Close the file and charge the bytes sent (a second call does nothing)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        await asyncio.shield(_run(self._services, os.close, fd))
        self._on_close(self._sent)


async def authorize_file_write(
    registry: BucketRegistry, principal: Principal, bucket: str, key: str
) -> Caller:
    """``principal`` as an S3 caller allowed to write a file at ``bucket``/``key``.

    Raises:
        S3Error: no write access to the bucket, or ``key`` is not a file's.
    """
    caller = caller_of(principal)
    await registry.authorize(caller, bucket, write=True)
    check_key(key)
    if is_directory_key(key):
        raise S3Error(
            "InvalidArgument",
            f"The key {key!r} ends in '/', which names a folder, not a file.",
            fix="upload to a key that ends in the file's name",
            resource=key,
        )
    return caller


def caller_of(principal: Principal) -> Caller:
    """The S3 caller an API key stands for (its tenant, role and key id)."""
    return Caller(
        "",
        principal.tenant_id,
        principal.tenant,
        principal.is_admin,
        principal.key_id,
        principal.role,
        principal.buckets,
    )


async def _run(services: Services, function: Callable[..., T], *args: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(services.executor, functools.partial(function, *args))


async def _no_send(_message: Message) -> None:
    raise RuntimeError("the dashboard answers its own requests; S3 handlers must not send")
