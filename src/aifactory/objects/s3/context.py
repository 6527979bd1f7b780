"""What every S3 handler gets: the request, its caller, the stores, and I/O helpers.

Disk work runs on a bounded thread pool (``run``), except the short work of
small requests on local filesystems (``run_quick``). Bodies stream through
``receive_body`` (about a megabyte per batch, one batch in flight) and
``send_file`` (one read ahead of the one being sent), so memory per request
stays bounded however large the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.types import Receive, Send

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.multipart import Multipart
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3.access import BucketRegistry, ObjectReadCheck
from aifactory.objects.s3.auth import Caller, PayloadCheck
from aifactory.objects.s3.cors_store import CorsConfigurations
from aifactory.objects.s3.request import S3Request
from aifactory.objects.s3.upload import Digests, Sink, UploadBody

T = TypeVar("T")
BATCH_BYTES = 1024 * 1024
READ_BYTES = 1024 * 1024
# A small request's whole work (open, hash, write, rename) takes about as long
# as a trip to the pool and back when the body is this size or less.
QUICK_BYTES = 64 * 1024


@dataclass
class Stats:
    """Counters for the status endpoint."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    in_flight: int = 0


@dataclass
class Services:
    """The long-lived parts the handlers use."""

    files: FileStore
    multipart: Multipart
    buckets: BucketRegistry
    executor: ThreadPoolExecutor
    stats: Stats
    cors: CorsConfigurations


@dataclass
class Context:
    """One request being served."""

    request: S3Request
    caller: Caller
    payload: PayloadCheck
    receive: Receive
    send: Send
    services: Services
    headers: list[tuple[bytes, bytes]]
    # Set when only the object's own ACL may let the caller read it.
    object_read: ObjectReadCheck | None = None

    def check_object_read(self, meta: ObjectMeta) -> None:
        """Raise AccessDenied unless the caller may read the object ``meta`` describes."""
        if self.object_read is not None and not self.object_read.reads(meta):
            raise S3Error("AccessDenied", resource=self.request.resource)

    @property
    def files(self) -> FileStore:
        """The file store."""
        return self.services.files

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking ``function(*args)`` on the I/O pool.

        Submitted directly: ``run_in_executor`` wants a partial and checks it
        is no coroutine function, which showed in small requests' profiles.
        """
        return await asyncio.wrap_future(self.services.executor.submit(function, *args))

    def quick(self) -> bool:
        """Whether file metadata work is quick enough to do on the event loop."""
        return self.services.files.local()

    async def run_quick(self, function: Callable[..., T], *args: Any) -> T:
        """Run short blocking ``function(*args)``: metadata work and at most ``QUICK_BYTES``.

        Inline when the store's tree is on local filesystems only: there the
        handoff to a pool thread and back (two context switches and a wake-up
        of the loop) cost more than the work, a third of a small request's
        CPU. On a network filesystem the work may wait on a server: the pool.
        """
        if self.quick():
            return function(*args)
        return await self.run(function, *args)

    async def receive_body(
        self, body: UploadBody, sink: Sink, finalize: Callable[[Digests], T]
    ) -> T:
        """Stream the request body through ``body`` and return ``finalize(digests)``.

        ``finalize`` runs in the same worker call as the last batch, so a small
        upload costs one trip to the pool, or none (``run_quick``). On any
        failure the sink is dropped.
        """
        pending: asyncio.Future[None] | None = None
        chunks: list[bytes] = []
        batched = 0
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise S3Error("IncompleteBody", "The client went away mid-upload.")
                data = message.get("body", b"")
                if data:
                    chunks.append(data)
                    batched += len(data)
                    self.services.stats.bytes_in += len(data)
                if not message.get("more_body", False):
                    break
                if batched >= BATCH_BYTES:
                    batch = b"".join(chunks)
                    chunks.clear()
                    batched = 0
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(self.run(body.feed, batch))
            if pending is not None:
                await pending
                pending = None
            elif batched <= QUICK_BYTES:
                return await self.run_quick(_finish, body, b"".join(chunks), finalize)
            return await self.run(_finish, body, b"".join(chunks), finalize)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
            await asyncio.shield(self.run(sink.abort))
            raise

    async def read_small_body(self, limit: int, too_large: str = "MalformedXML") -> bytes:
        """The whole body of a request with an XML or empty body, up to ``limit`` bytes.

        Raises:
            S3Error: with code ``too_large`` when the body is longer.
        """
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise S3Error("IncompleteBody", "The client went away.")
            data = message.get("body", b"")
            size += len(data)
            if size > limit:
                raise S3Error(too_large, f"The request body is larger than {limit} bytes.")
            chunks.append(data)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def send_file(self, fd: int, offset: int, length: int) -> None:
        """Send ``length`` bytes of ``fd`` from ``offset``, one read ahead; closes ``fd``."""
        end = offset + length
        following: asyncio.Future[bytes] | None = None
        try:
            data = await self.run(os.pread, fd, min(READ_BYTES, length), offset)
            while True:
                if not data:
                    raise S3Error("InternalError", "The file shrank while it was being sent.")
                offset += len(data)
                if offset < end:
                    size = min(READ_BYTES, end - offset)
                    following = asyncio.ensure_future(self.run(os.pread, fd, size, offset))
                await self.send(
                    {"type": "http.response.body", "body": data, "more_body": offset < end}
                )
                self.services.stats.bytes_out += len(data)
                if following is None:
                    return
                data, following = await following, None
        finally:
            if following is not None:
                with contextlib.suppress(BaseException):
                    await following
            await asyncio.shield(self.run_quick(os.close, fd))


def _finish(body: UploadBody, last: bytes, finalize: Callable[[Digests], T]) -> T:
    return finalize(body.finish(last))
