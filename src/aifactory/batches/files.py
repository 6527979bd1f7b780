"""Files of the Files API, kept as objects in the tenant's own batch bucket.

A tenant's files live in its bucket ``batches-TENANT`` under ``files/``: the
same bytes an S3 client lists and a job reads on POSIX (the bucket's files
belong to the tenant's Unix user). The store keeps each file's id, name,
purpose and size; every read is scoped to the caller's tenant, so another
tenant's file id answers 404 as if it did not exist::

    upload -> check lines (input files) -> bucket batches-TENANT, key files/FILE_ID.jsonl
           -> batch_files row
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from starlette.types import Message

from aifactory.batches.requests import check_input
from aifactory.errors import BadRequest, NotFound, PayloadTooLarge
from aifactory.objects import ObjectsService, S3Error
from aifactory.store import BatchFileRow, Store
from aifactory.tenancy import Principal

INPUT_PURPOSE = "batch"
OUTPUT_PURPOSE = "batch_output"

_CONTENT_TYPE = "application/jsonl"


class Download(Protocol):
    """A file opened for reading, streamed a chunk at a time (the object store's download)."""

    size: int

    def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes."""
        ...

    async def aclose(self) -> None:
        """Close the file."""
        ...


def bucket_of(tenant: str) -> str:
    """The bucket a tenant's batch files go to (a valid S3 bucket name)."""
    name = re.sub(r"[^a-z0-9-]+", "-", tenant.lower()).strip("-") or "tenant"
    return f"batches-{name}"[:63].rstrip("-")


def file_view(row: BatchFileRow) -> dict[str, Any]:
    """An OpenAI file object."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(row.created_at.timestamp()),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


class BatchFiles:
    """Upload, list, read and delete a tenant's batch files.

    Args:
        store: Where file rows are kept.
        objects: The object storage the bytes go to (its dashboard path, by API key).
        max_bytes: The largest input file taken.
        max_lines: The most requests one input file may hold.
    """

    def __init__(
        self, store: Store, objects: ObjectsService, max_bytes: int, max_lines: int
    ) -> None:
        self._store = store
        self._objects = objects
        self.max_bytes = max_bytes
        self.max_lines = max_lines

    async def upload(
        self, caller: Principal, filename: str, purpose: str, data: bytes
    ) -> BatchFileRow:
        """Check and keep an input file for the caller's tenant.

        Raises:
            BadRequest: another purpose than ``batch``, or bad lines (named).
            PayloadTooLarge: over ``max_bytes``.
        """
        if purpose != INPUT_PURPOSE:
            raise BadRequest(
                f"purpose {purpose!r} is not served here.",
                fix="use purpose='batch'",
                param="purpose",
            )
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"The file is {len(data)} bytes; a batch input file may be at most "
                f"{self.max_bytes} bytes.",
                fix="split it into several batches (or ask the operator to raise "
                "AIFACTORY_BATCH_MAX_FILE_BYTES)",
            )
        checked = await asyncio.to_thread(check_input, data, self.max_lines)
        if checked.summary is None:
            first = checked.errors[0]
            raise BadRequest(
                f"The batch input file {filename!r} has invalid lines: {checked.message()}.",
                fix="each line must be {custom_id, method: POST, url, body} with a unique "
                "custom_id, one endpoint and one model",
                param=f"line {first.line}{f'.{first.param}' if first.param else ''}",
            )
        return await self.keep(caller, filename, INPUT_PURPOSE, data, checked.summary.lines)

    async def keep(
        self, caller: Principal, filename: str, purpose: str, data: bytes, lines: int
    ) -> BatchFileRow:
        """Put ``data`` in the tenant's bucket and record it (input and output files alike)."""
        bucket = bucket_of(caller.tenant)
        file_id = "file-" + secrets.token_hex(12)
        key = f"files/{file_id}.jsonl"
        await self._own_bucket(caller, bucket)
        await self._objects.put_object(_tenant(caller), bucket, key, _CONTENT_TYPE, _body(data))
        return await asyncio.to_thread(
            self._store.add_batch_file,
            id=file_id,
            tenant_id=caller.tenant_id,
            filename=filename[:255] or f"{file_id}.jsonl",
            purpose=purpose,
            bytes=len(data),
            lines=lines,
            bucket=bucket,
            key=key,
        )

    async def _own_bucket(self, caller: Principal, bucket: str) -> None:
        """Create the tenant's batch bucket on first use (the service's, not a quota's bucket)."""
        registry = self._objects.registry
        assert registry is not None, "the object store is not prepared"
        try:
            await registry.create_for(caller.tenant_id, bucket)
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise BadRequest(
                    f"the batch bucket {bucket!r} cannot be used: {exc}",
                    fix="ask the operator: another tenant holds that bucket name",
                ) from exc

    async def get(self, caller: Principal, file_id: str) -> BatchFileRow:
        """The caller's tenant's file ``file_id``.

        Raises:
            NotFound: no such file of this tenant.
        """
        row = await asyncio.to_thread(self._store.batch_file, file_id, caller.tenant_id)
        if row is None:
            raise NotFound(f"No such file: {file_id!r}.", param="file_id")
        return row

    async def files(self, caller: Principal, purpose: str, limit: int) -> list[BatchFileRow]:
        """The caller's tenant's files, newest first."""
        return await asyncio.to_thread(self._store.batch_files, caller.tenant_id, purpose, limit)

    async def content(self, caller: Principal, file_id: str) -> Download:
        """The file's bytes, opened through the object store (the caller must ``aclose``)."""
        row = await self.get(caller, file_id)
        return await self._objects.get_object(_tenant(caller), row.bucket, row.key)

    async def delete(self, caller: Principal, file_id: str) -> None:
        """Delete the file's object and its row."""
        row = await self.get(caller, file_id)
        await self._objects.delete_object(_tenant(caller), row.bucket, row.key)
        await asyncio.to_thread(self._store.delete_batch_file, row.id)

    async def read(self, row: BatchFileRow) -> bytes:
        """A file's bytes, read by the control plane (no link the tenant put there is followed)."""
        files = self._objects.files
        assert files is not None, "the object store is not prepared"
        fd, _info = await asyncio.to_thread(files.open, row.bucket, row.key)
        with os.fdopen(fd, "rb") as handle:
            return await asyncio.to_thread(handle.read)

    def path(self, row: BatchFileRow) -> Path:
        """Where the file lies on POSIX (what a batch job, as the tenant, reads)."""
        files = self._objects.files
        assert files is not None, "the object store is not prepared"
        return Path(files.bucket_dir(row.bucket)) / row.key


def _tenant(caller: Principal) -> Principal:
    """The caller acting on its tenant's batch bucket, whatever its role and bucket scope.

    The Files API is a data path any key of the tenant may use (an
    ``inference`` key too); the bucket is where its files live, not one of
    the buckets a key is scoped to.
    """
    if caller.is_admin:
        return caller
    return replace(caller, role="member", buckets=None)


def _body(data: bytes) -> Any:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    return receive
