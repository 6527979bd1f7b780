"""Multipart handlers: create, upload (and copy) parts, complete, abort, list parts and uploads."""

from __future__ import annotations

import os
import time

from aifactory.objects.errors import S3Error
from aifactory.objects.posix import checksums
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.multipart import Multipart, Part, PartWriter, Upload
from aifactory.objects.posix.paths import check_key, is_directory_key
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3 import acl_ops
from aifactory.objects.s3.context import Context
from aifactory.objects.s3.object_ops import (
    check_copy_conditions,
    copy_with_md5,
    meta_from_request,
    open_copy_source,
    parse_copy_source,
    version_headers,
)
from aifactory.objects.s3.request import S3Request
from aifactory.objects.s3.responses import (
    child_text,
    document,
    element,
    iso_time,
    parse_xml,
    send_empty,
    send_xml,
)
from aifactory.objects.s3.upload import Digests, UploadBody, announced_size
from aifactory.objects.s3.write_conditions import write_check


def _multipart(ctx: Context) -> Multipart:
    return ctx.services.multipart


def _checked_key(ctx: Context) -> str:
    check_key(ctx.request.key)
    if is_directory_key(ctx.request.key):
        raise S3Error("InvalidRequest", "Directory objects cannot be uploaded in parts.")
    return ctx.request.key


async def create_upload(ctx: Context) -> None:
    """POST /bucket/key?uploads."""
    key = _checked_key(ctx)
    meta = meta_from_request(ctx.request)
    algorithm = ctx.request.header("x-amz-checksum-algorithm").lower()
    if algorithm and algorithm not in checksums.ALGORITHMS:
        checksums.algorithm_of_header(checksums.header_name(algorithm))
    kind = checksums.multipart_type(algorithm, ctx.request.header("x-amz-checksum-type"))
    grants = await acl_ops.object_grants_of_write(ctx)
    await ctx.read_small_body(0)
    upload = Upload(
        "", key, time.time(), meta.content_type, meta.user, meta.headers, algorithm, kind, grants
    )
    upload_id = await ctx.run(_multipart(ctx).create, ctx.request.bucket, upload)
    body = document(
        "InitiateMultipartUploadResult",
        [
            element("Bucket", ctx.request.bucket),
            element("Key", key),
            element("UploadId", upload_id),
        ],
    )
    headers = list(ctx.headers)
    if algorithm:
        headers.append((b"x-amz-checksum-algorithm", algorithm.upper().encode()))
        headers.append((b"x-amz-checksum-type", kind.encode()))
    await send_xml(ctx.send, 200, body, headers)


def _part_number(request: S3Request) -> int:
    try:
        return int(request.params["partNumber"])
    except ValueError:
        raise S3Error("InvalidArgument", "partNumber must be a whole number.") from None


async def upload_part(ctx: Context) -> None:
    """PUT /bucket/key?partNumber=N&uploadId=ID (UploadPartCopy with x-amz-copy-source)."""
    key = _checked_key(ctx)
    request = ctx.request
    upload = await ctx.run(_multipart(ctx).upload, request.bucket, key, request.params["uploadId"])
    number = _part_number(request)
    if request.header("x-amz-copy-source"):
        writer = _multipart(ctx).part_writer(request.bucket, upload.upload_id, number)
        await _upload_part_copy(ctx, writer)
        return
    size = announced_size(request, ctx.payload.chunked)
    writer = _multipart(ctx).part_writer(request.bucket, upload.upload_id, number, size)
    body = UploadBody(writer, ctx.payload, request, upload.checksum_algorithm)
    if upload.checksum_algorithm and body.algorithm != upload.checksum_algorithm:
        raise S3Error(
            "InvalidRequest",
            f"This upload's parts carry {upload.checksum_algorithm.upper()} checksums, "
            f"not {body.algorithm.upper() or 'none'}.",
        )

    def publish(digests: Digests) -> tuple[Part, str]:
        return writer.publish(digests.etag, digests.checksum), digests.checksum_algorithm

    part, algorithm = await ctx.receive_body(body, writer, publish)
    headers = [*ctx.headers, (b"etag", part.etag.encode())]
    if part.checksum:
        headers.append((checksums.header_name(algorithm).encode(), part.checksum.encode()))
    await send_empty(ctx.send, 200, headers)


async def _upload_part_copy(ctx: Context, writer: PartWriter) -> None:
    source_bucket, source_key = parse_copy_source(ctx.request)
    await ctx.services.buckets.authorize(ctx.caller, source_bucket, write=False)
    part = await ctx.run(_copy_part, ctx.files, ctx.request, source_bucket, source_key, writer)
    body = document(
        "CopyPartResult",
        [element("LastModified", iso_time(part.last_modified)), element("ETag", part.etag)],
    )
    await send_xml(ctx.send, 200, body, ctx.headers)


def _copy_part(
    files: FileStore, request: S3Request, bucket: str, key: str, writer: PartWriter
) -> Part:
    fd, info = open_copy_source(files, request, bucket, key)
    try:
        check_copy_conditions(request, info)
        size = 0 if is_directory_key(key) else info.st.st_size  # a marker has no bytes
        copy_range = request.header("x-amz-copy-source-range")
        start, end = copy_source_range(copy_range, size) if copy_range else (0, size - 1)
        try:
            md5 = copy_with_md5(fd, writer.fd, start, end - start + 1)
            return writer.publish(f'"{md5.hex()}"', "")
        except BaseException:
            writer.abort()
            raise
    finally:
        os.close(fd)


def copy_source_range(header: str, size: int) -> tuple[int, int]:
    """The inclusive range ``x-amz-copy-source-range`` asks of ``size`` bytes.

    Unlike a GET's Range, it must be exactly ``bytes=FIRST-LAST`` and lie
    within the source: a copy is never silently shortened.

    Raises:
        S3Error: InvalidArgument when malformed; InvalidRange past the source's end.
    """
    first, dash, last = header.removeprefix("bytes=").partition("-")
    if not header.startswith("bytes=") or not (dash and first.isdigit() and last.isdigit()):
        raise S3Error(
            "InvalidArgument",
            f"x-amz-copy-source-range {header[:40]!r} is not bytes=FIRST-LAST.",
        )
    start, end = int(first), int(last)
    if start > end:
        raise S3Error("InvalidArgument", "The copy range ends before it starts.")
    if end >= size:
        error = S3Error("InvalidRange", f"The source object has {size} bytes.")
        error.headers = {"content-range": f"bytes */{size}"}
        raise error
    return start, end


async def complete_upload(ctx: Context) -> None:
    """POST /bucket/key?uploadId=ID with the list of parts.

    Completing an upload again (a client retrying after a lost answer) gives
    the first completion's answer while the object it made is unchanged.
    """
    key = _checked_key(ctx)
    try:
        meta = await _complete(ctx, key)
    except S3Error as exc:
        if exc.code != "NoSuchUpload":
            raise
        upload_id = ctx.request.params["uploadId"]
        done = await ctx.run(_multipart(ctx).completed, ctx.request.bucket, key, upload_id)
        if done is None:
            raise
        await ctx.read_small_body(2 * 1024 * 1024)
        meta = ObjectMeta(done.etag, 0, 0, checksum_algorithm=done.checksum_algorithm)
        meta.checksum = done.checksum
    checksum_tag = "Checksum" + meta.checksum_algorithm.upper()
    parts = [
        element("Location", f"/{ctx.request.bucket}/{key}"),
        element("Bucket", ctx.request.bucket),
        element("Key", key),
        element("ETag", meta.etag),
    ]
    if meta.checksum:
        kind = checksums.type_of(meta.checksum)
        parts += [element(checksum_tag, meta.checksum), element("ChecksumType", kind)]
    headers = [*ctx.headers, *version_headers(meta)]
    await send_xml(ctx.send, 200, document("CompleteMultipartUploadResult", parts), headers)


async def _complete(ctx: Context, key: str) -> ObjectMeta:
    request = ctx.request
    upload = await ctx.run(_multipart(ctx).upload, request.bucket, key, request.params["uploadId"])
    root = parse_xml(await ctx.read_small_body(2 * 1024 * 1024))
    requested = []
    checksum_tag = "Checksum" + upload.checksum_algorithm.upper()
    for node in root.findall("Part"):
        try:
            number = int(child_text(node, "PartNumber"))
        except ValueError:
            raise S3Error("MalformedXML", "A PartNumber is not a number.") from None
        checksum = child_text(node, checksum_tag) if upload.checksum_algorithm else ""
        requested.append((number, child_text(node, "ETag"), checksum))
    expected = ""
    if upload.checksum_algorithm:
        expected = request.header(checksums.header_name(upload.checksum_algorithm))
    return await ctx.run(
        _multipart(ctx).complete, request.bucket, upload, requested, write_check(request), expected
    )


async def abort_upload(ctx: Context) -> None:
    """DELETE /bucket/key?uploadId=ID."""
    key = _checked_key(ctx)
    request = ctx.request
    upload = await ctx.run(_multipart(ctx).upload, request.bucket, key, request.params["uploadId"])
    await ctx.run(_multipart(ctx).abort, request.bucket, upload.upload_id)
    await send_empty(ctx.send, 204, ctx.headers)


async def list_parts(ctx: Context) -> None:
    """GET /bucket/key?uploadId=ID."""
    key = _checked_key(ctx)
    request = ctx.request
    upload = await ctx.run(_multipart(ctx).upload, request.bucket, key, request.params["uploadId"])
    try:
        marker = int(request.params.get("part-number-marker", "0") or 0)
        max_parts = min(1000, int(request.params.get("max-parts", "1000")))
    except ValueError:
        raise S3Error("InvalidArgument", "part-number-marker and max-parts are numbers.") from None
    parts = await ctx.run(_multipart(ctx).parts, request.bucket, upload.upload_id)
    parts = [p for p in parts if p.number > marker]
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    checksum_tag = "Checksum" + upload.checksum_algorithm.upper()
    body = [
        element("Bucket", request.bucket),
        element("Key", key),
        element("UploadId", upload.upload_id),
        element("PartNumberMarker", marker),
        element("NextPartNumberMarker", parts[-1].number if parts else marker),
        element("MaxParts", max_parts),
        element("IsTruncated", "true" if truncated else "false"),
        element("StorageClass", "STANDARD"),
    ]
    for part in parts:
        checksum = element(checksum_tag, part.checksum) if part.checksum else ""
        body.append(
            f"<Part>{element('PartNumber', part.number)}"
            f"{element('LastModified', iso_time(part.last_modified))}"
            f"{element('ETag', part.etag)}{element('Size', part.size)}{checksum}</Part>"
        )
    await send_xml(ctx.send, 200, document("ListPartsResult", body), ctx.headers)


async def list_uploads(ctx: Context) -> None:
    """GET /bucket?uploads (one page of up to 1000)."""
    request = ctx.request
    prefix = request.params.get("prefix", "")
    uploads = await ctx.run(_multipart(ctx).uploads, request.bucket, prefix)
    truncated = len(uploads) > 1000
    body = [
        element("Bucket", request.bucket),
        element("KeyMarker", ""),
        element("UploadIdMarker", ""),
        element("Prefix", prefix),
        element("MaxUploads", 1000),
        element("IsTruncated", "true" if truncated else "false"),
    ]
    tenant = ctx.caller.tenant
    person = f"{element('ID', tenant)}{element('DisplayName', tenant)}"
    for upload in uploads[:1000]:
        body.append(
            f"<Upload>{element('Key', upload.key)}{element('UploadId', upload.upload_id)}"
            f"<Initiator>{person}</Initiator><Owner>{person}</Owner>"
            f"{element('StorageClass', 'STANDARD')}"
            f"{element('Initiated', iso_time(upload.initiated))}</Upload>"
        )
    await send_xml(ctx.send, 200, document("ListMultipartUploadsResult", body), ctx.headers)
