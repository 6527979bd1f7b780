"""Object handlers: PutObject, GetObject, HeadObject, DeleteObject, CopyObject, DeleteObjects."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from aifactory.objects.errors import S3Error
from aifactory.objects.posix import checksums
from aifactory.objects.posix.metadata import (
    DEFAULT_CONTENT_TYPE,
    ObjectMeta,
    check_user_metadata,
)
from aifactory.objects.posix.multipart import MAX_PART_NUMBER
from aifactory.objects.posix.paths import check_key, is_directory_key
from aifactory.objects.posix.storage import FileStore, ObjectInfo
from aifactory.objects.s3 import acl_ops
from aifactory.objects.s3.context import QUICK_BYTES, READ_BYTES, Context
from aifactory.objects.s3.request import S3Request
from aifactory.objects.s3.responses import (
    child_text,
    document,
    element,
    http_time,
    iso_time,
    parse_xml,
    send_empty,
    send_xml,
)
from aifactory.objects.s3.upload import Digests, UploadBody
from aifactory.objects.s3.write_conditions import (
    WriteCheck,
    delete_check,
    etag_matches,
    write_check,
)

STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
MAX_DELETE_KEYS = 1000
MAX_PARTS_LISTED = 1000
_ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
# Control characters no HTTP header value may carry (a tab may).
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def meta_from_request(request: S3Request) -> ObjectMeta:
    """Content type, user metadata (lower case) and stored headers of a write request."""
    user = {
        name[len("x-amz-meta-") :]: _metadata_text(values[0])
        for name, values in request.headers.items()
        if name.startswith("x-amz-meta-")
    }
    check_user_metadata(user)
    headers = {name: request.header(name) for name in STORED_HEADERS if request.header(name)}
    sent = headers.get("content-encoding", "")
    encodings = [e.strip() for e in sent.split(",") if e.strip()]
    kept = [e for e in encodings if e != "aws-chunked"]
    if not kept:
        headers.pop("content-encoding", None)
    elif len(kept) < len(encodings):
        headers["content-encoding"] = ", ".join(kept)
    content_type = request.header("content-type") or DEFAULT_CONTENT_TYPE
    return ObjectMeta("", 0, 0, content_type, user, headers)


def _metadata_text(value: str) -> str:
    """A metadata header's text: its bytes (read one per character) as UTF-8 when they are.

    SDKs send non-ASCII metadata as UTF-8 bytes but read answers' headers as
    Latin-1; keeping the text lets ``_metadata_bytes`` answer what they read back.
    """
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _metadata_bytes(value: str) -> bytes:
    """A metadata value on the wire: Latin-1 when it can be (what SDKs decode), else UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def version_headers(meta: ObjectMeta) -> list[tuple[bytes, bytes]]:
    """``x-amz-version-id`` of an object in a bucket that keeps versions (none: null)."""
    return [(b"x-amz-version-id", meta.version_id.encode())] if meta.version_id else []


def checksum_headers(meta: ObjectMeta) -> list[tuple[bytes, bytes]]:
    """``x-amz-checksum-*`` (and its type) of an object, if it has one."""
    if not meta.checksum:
        return []
    kind = checksums.type_of(meta.checksum).encode()
    return [
        (checksums.header_name(meta.checksum_algorithm).encode(), meta.checksum.encode()),
        (b"x-amz-checksum-type", kind),
    ]


async def put_object(ctx: Context) -> None:
    """PUT /bucket/key."""
    request = ctx.request
    check_key(request.key)
    meta = meta_from_request(request)
    meta.acl = await acl_ops.object_grants_of_write(ctx)
    if is_directory_key(request.key):
        await _put_directory(ctx, meta)
        return
    stored = await receive_object(ctx, meta)
    headers = [*ctx.headers, (b"etag", stored.etag.encode()), *checksum_headers(stored)]
    await send_empty(ctx.send, 200, [*headers, *version_headers(stored)])


async def receive_object(ctx: Context, meta: ObjectMeta) -> ObjectMeta:
    """Stream the request body into a new object at the request's (file) key; its metadata.

    PutObject's write path, shared with the dashboard's upload: the body is
    hashed as it streams to a temporary file, checked against the length and
    digests the request promised, and renamed into place with ``meta``.
    """
    request = ctx.request
    writer = ctx.files.writer(request.bucket, request.key)
    body = UploadBody(writer, ctx.payload, request)
    check = write_check(request)

    def publish(digests: Digests) -> ObjectMeta:
        meta.etag = digests.etag
        meta.checksum_algorithm, meta.checksum = digests.checksum_algorithm, digests.checksum
        return writer.publish(meta, check)

    return await ctx.receive_body(body, writer, publish)


async def _put_directory(ctx: Context, meta: ObjectMeta) -> None:
    await ctx.read_small_body(0, too_large="DirectoryObjectContainsData")
    meta.etag = f'"{hashlib.md5(b"", usedforsecurity=False).hexdigest()}"'
    await ctx.run(ctx.files.make_directory, ctx.request.bucket, ctx.request.key, meta)
    await send_empty(ctx.send, 200, [*ctx.headers, (b"etag", meta.etag.encode())])


@dataclass
class _Opened:
    fd: int
    info: ObjectInfo
    first: bytes


def _open(files: FileStore, bucket: str, key: str, whole_up_to: int) -> _Opened:
    """Open the object; one of ``whole_up_to`` bytes or less is read whole and closed."""
    fd, info = files.open(bucket, key)
    if info.st.st_size > whole_up_to:
        return _Opened(fd, info, b"")
    try:
        first = b"" if is_directory_key(key) else os.pread(fd, READ_BYTES, 0)
    finally:
        os.close(fd)
    return _Opened(-1, info, first)


def _open_version(files: FileStore, bucket: str, key: str, version: str) -> _Opened:
    fd, info = files.versions.open(bucket, key, version)
    return _Opened(fd, info, b"")


def _overrides(request: S3Request) -> dict[str, str]:
    """The response headers ``response-*`` parameters ask for.

    Raises:
        S3Error: InvalidArgument when a value holds characters no header can carry.
    """
    overrides = {}
    for parameter, header in _OVERRIDES.items():
        if parameter in request.params:
            value = request.params[parameter]
            if _UNSENDABLE.search(value):
                raise S3Error(
                    "InvalidArgument",
                    f"{parameter} holds control characters, which no header may carry.",
                )
            overrides[header] = value
    return overrides


async def get_object(ctx: Context, head: bool) -> None:
    """GET or HEAD /bucket/key, with ranges, conditions and response-* overrides."""
    request = ctx.request
    check_key(request.key)
    version = request.params.get("versionId", "")
    overrides = _overrides(request)
    try:
        if version:
            opened = await ctx.run_quick(
                _open_version, ctx.files, request.bucket, request.key, version
            )
        elif head:
            info = await ctx.run_quick(ctx.files.head, request.bucket, request.key)
            opened = _Opened(-1, info, b"")
        else:
            whole_up_to = QUICK_BYTES if ctx.quick() else READ_BYTES
            opened = await ctx.run_quick(_open, ctx.files, request.bucket, request.key, whole_up_to)
    except S3Error as exc:
        if exc.code == "NoSuchKey":  # say whether a delete marker stands there (as S3)
            marker = ctx.files.versions.marker_headers
            exc.headers.update(await ctx.run_quick(marker, request.bucket, request.key))
        raise
    try:
        ctx.check_object_read(opened.info.meta)
        await _respond_with_object(ctx, opened, head, overrides)
    finally:
        if opened.fd >= 0:
            await ctx.run_quick(os.close, opened.fd)


async def get_object_attributes(ctx: Context) -> None:
    """GET /bucket/key?attributes: what ``x-amz-object-attributes`` names, without the bytes."""
    request = ctx.request
    check_key(request.key)
    version = request.params.get("versionId", "")
    wanted = {name.strip() for name in request.header("x-amz-object-attributes").split(",")}
    wanted.discard("")
    if not wanted or not wanted.issubset(_ATTRIBUTES):
        raise S3Error(
            "InvalidArgument",
            f"x-amz-object-attributes names some of {', '.join(_ATTRIBUTES)}.",
        )
    if version:
        opened = await ctx.run_quick(_open_version, ctx.files, request.bucket, request.key, version)
        await ctx.run_quick(os.close, opened.fd)
        info = opened.info
    else:
        info = await ctx.run_quick(ctx.files.head, request.bucket, request.key)
    meta = info.meta
    size = 0 if is_directory_key(info.key) else info.st.st_size
    found = []
    if "ETag" in wanted:
        found.append(element("ETag", meta.etag.strip('"')))
    if "Checksum" in wanted and meta.checksum:
        tag = "Checksum" + meta.checksum_algorithm.upper()
        kind = checksums.type_of(meta.checksum)
        found.append(
            f"<Checksum>{element(tag, meta.checksum)}{element('ChecksumType', kind)}</Checksum>"
        )
    if "ObjectParts" in wanted and meta.parts:
        found.append(_object_parts(request, meta))
    if "StorageClass" in wanted:
        found.append(element("StorageClass", "STANDARD"))
    if "ObjectSize" in wanted:
        found.append(element("ObjectSize", size))
    headers = [*ctx.headers, (b"last-modified", http_time(info.st.st_mtime).encode())]
    headers += version_headers(meta)
    await send_xml(ctx.send, 200, document("GetObjectAttributesResponse", found), headers)


def _object_parts(request: S3Request, meta: ObjectMeta) -> str:
    """``<ObjectParts>``: the count and, when the sizes were kept, a page of parts.

    The page starts after ``x-amz-part-number-marker`` and holds up to
    ``x-amz-max-parts`` (1000) parts.
    """
    marker = _whole_number(request, "x-amz-part-number-marker", 0)
    most = _whole_number(request, "x-amz-max-parts", MAX_PARTS_LISTED)
    inner = [element("PartsCount", meta.parts)]
    if meta.part_runs:
        numbers = range(marker + 1, min(meta.parts, marker + most) + 1)
        truncated = marker + most < meta.parts
        inner += [
            element("PartNumberMarker", marker),
            element("MaxParts", most),
            element("IsTruncated", "true" if truncated else "false"),
        ]
        if truncated:
            inner.append(element("NextPartNumberMarker", numbers[-1] if numbers else marker))
        tag = "Checksum" + meta.checksum_algorithm.upper()
        for number in numbers:
            start, end = meta.part_range(number)
            part = [element("PartNumber", number), element("Size", end - start + 1)]
            if meta.part_checksums:
                part.append(element(tag, meta.part_checksum(number)))
            inner.append(f"<Part>{''.join(part)}</Part>")
    return f"<ObjectParts>{''.join(inner)}</ObjectParts>"


def _whole_number(request: S3Request, header: str, default: int) -> int:
    text = request.header(header)
    if not text:
        return default
    if not text.isdigit() or int(text) > MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"{header} must be a whole number up to 10000.")
    return int(text)


async def _respond_with_object(
    ctx: Context, opened: _Opened, head: bool, overrides: dict[str, str]
) -> None:
    request, info = ctx.request, opened.info
    meta = info.meta
    size = 0 if is_directory_key(info.key) else info.st.st_size
    mtime = info.st.st_mtime
    headers = [
        *ctx.headers,
        (b"etag", meta.etag.encode()),
        (b"last-modified", http_time(mtime).encode()),
    ]
    not_modified = check_conditions(
        meta.etag,
        mtime,
        request.header("if-match"),
        request.header("if-none-match"),
        request.header("if-modified-since"),
        request.header("if-unmodified-since"),
    )
    if not_modified:
        await send_empty(ctx.send, 304, headers)
        return
    described = {"content-type": meta.content_type, **meta.headers, **overrides}
    headers += [
        (name.encode(), value.encode("latin-1", "replace")) for name, value in described.items()
    ]
    headers += [
        (f"x-amz-meta-{name}".encode(), _metadata_bytes(value)) for name, value in meta.user.items()
    ]
    headers.append((b"accept-ranges", b"bytes"))
    headers += version_headers(meta)
    if meta.parts:
        headers.append((b"x-amz-mp-parts-count", str(meta.parts).encode()))
    byte_range = _part_or_range(request, meta, size)
    if byte_range is None:
        start, length, status = 0, size, 200
        if request.header("x-amz-checksum-mode").upper() == "ENABLED":
            headers += checksum_headers(meta)
    else:
        start, end = byte_range
        length, status = end - start + 1, 206
        headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
        headers += _part_checksum_header(request, meta)
    headers.append((b"content-length", str(length).encode()))
    await ctx.send({"type": "http.response.start", "status": status, "headers": headers})
    if head or length == 0:
        await ctx.send({"type": "http.response.body", "body": b""})
        return
    if opened.fd < 0:  # read whole already
        data = opened.first[start : start + length]
        await ctx.send({"type": "http.response.body", "body": data})
        ctx.services.stats.bytes_out += len(data)
        return
    fd, opened.fd = opened.fd, -1  # send_file closes it
    await ctx.send_file(fd, start, length)


def _part_checksum_header(request: S3Request, meta: ObjectMeta) -> list[tuple[bytes, bytes]]:
    """A part read's own checksum, when asked for (``x-amz-checksum-mode``) and kept.

    Only for ``?partNumber=``: a Range is no part, and the object's checksum
    would not match its bytes (SDKs check it).
    """
    number = request.params.get("partNumber", "")
    if request.header("x-amz-checksum-mode").upper() != "ENABLED" or not number.isdigit():
        return []
    value = meta.part_checksum(int(number))
    if not value or "-" in value:
        return []
    return [
        (checksums.header_name(meta.checksum_algorithm).encode(), value.encode()),
        (b"x-amz-checksum-type", checksums.type_of(meta.checksum).encode()),
    ]


def _part_or_range(request: S3Request, meta: ObjectMeta, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked by ``?partNumber=N`` or a Range header; None: all."""
    number = request.params.get("partNumber")
    if number is None:
        return parse_range(request.header("range"), size)
    if request.header("range"):
        raise S3Error(
            "InvalidRequest", "Cannot specify both Range header and partNumber query parameter."
        )
    try:
        part = int(number)
    except ValueError:
        part = 0
    if not 1 <= part <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument", f"Part numbers run from 1 to {MAX_PART_NUMBER}, not {number[:20]!r}."
        )
    start, end = meta.part_range(part)
    return (start, end) if end >= start else None


def check_conditions(
    etag: str,
    mtime: float,
    if_match: str,
    if_none_match: str,
    if_modified_since: str,
    if_unmodified_since: str,
) -> bool:
    """Evaluate conditional headers (RFC 7232 order); True means 304 Not Modified.

    Raises:
        S3Error: PreconditionFailed (412).
    """
    seconds = int(mtime)
    if if_match:
        if not etag_matches(etag, if_match):
            raise S3Error("PreconditionFailed", "If-Match did not match the ETag.")
    elif if_unmodified_since:
        since = _http_date(if_unmodified_since)
        if since is not None and seconds > since:
            raise S3Error("PreconditionFailed", "The object was modified since that time.")
    if if_none_match:
        return etag_matches(etag, if_none_match)
    if if_modified_since:
        since = _http_date(if_modified_since)
        return since is not None and seconds <= since
    return False


def _http_date(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks of ``size`` bytes; None: whole object.

    Raises:
        S3Error: InvalidRange (416) when the range cannot be satisfied.
    """
    if not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes=") :].strip().partition("-")
    if not sep:
        return None
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise _invalid_range(size)
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise _invalid_range(size)
    if end < start:
        return None
    return start, min(end, size - 1)


def _invalid_range(size: int) -> S3Error:
    error = S3Error("InvalidRange", f"The object has {size} bytes.")
    error.headers = {"content-range": f"bytes */{size}"}
    return error


async def delete_object(ctx: Context) -> None:
    """DELETE /bucket/key (succeeds when the key is absent)."""
    check_key(ctx.request.key)
    _check_version(ctx.request.params.get("versionId", ""), ctx.request.key)
    check = delete_check(ctx.request.header("if-match"))
    await ctx.run_quick(_delete_checked, ctx.files, ctx.request.bucket, ctx.request.key, check)
    await send_empty(ctx.send, 204, ctx.headers)


def _delete_checked(files: FileStore, bucket: str, key: str, check: WriteCheck | None) -> None:
    if not files.bucket_exists(bucket):
        raise S3Error("NoSuchBucket", resource=bucket)
    files.delete(bucket, key, check)


async def delete_objects(ctx: Context) -> None:
    """POST /bucket?delete: up to 1000 keys in one request."""
    root = parse_xml(await ctx.read_small_body(2 * 1024 * 1024))
    quiet = child_text(root, "Quiet").lower() == "true"
    targets = [
        (child_text(o, "Key"), child_text(o, "VersionId"), child_text(o, "ETag"))
        for o in root.findall("Object")
    ]
    if len(targets) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML", f"At most {MAX_DELETE_KEYS} keys per request.")
    outcomes = await ctx.run(_delete_many, ctx.files, ctx.request.bucket, targets)
    parts = []
    for (key, version, _etag), error in zip(targets, outcomes, strict=True):
        version_xml = element("VersionId", version) if version else ""
        if error is None:
            if not quiet:
                parts.append(f"<Deleted>{element('Key', key)}{version_xml}</Deleted>")
        else:
            parts.append(
                f"<Error>{element('Key', key)}{version_xml}{element('Code', error.code)}"
                f"{element('Message', error.message)}</Error>"
            )
    await send_xml(ctx.send, 200, document("DeleteResult", parts), ctx.headers)


def _delete_many(
    files: FileStore, bucket: str, targets: list[tuple[str, str, str]]
) -> list[S3Error | None]:
    """Delete (key, version, ETag or "") targets; each one's error or None."""
    if not files.bucket_exists(bucket):
        raise S3Error("NoSuchBucket", resource=bucket)
    outcomes: list[S3Error | None] = []
    for key, version, etag in targets:
        try:
            check_key(key)
            _check_version(version, key)
            files.delete(bucket, key, delete_check(etag))
            outcomes.append(None)
        except S3Error as exc:
            outcomes.append(exc)
    return outcomes


def _check_version(version: str, key: str) -> None:
    # Buckets are not versioned: each object's one version is called "null".
    if version and version != "null":
        raise S3Error("NoSuchVersion", resource=key)


def parse_copy_source(request: S3Request) -> tuple[str, str]:
    """(bucket, key) of ``x-amz-copy-source``; the ``?versionId=`` after it is apart."""
    source = unquote(request.header("x-amz-copy-source").partition("?")[0]).lstrip("/")
    bucket, _, key = source.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be /bucket/key.")
    check_key(key)
    return bucket, key


def copy_source_version(request: S3Request) -> str:
    """The ``versionId`` named after ``x-amz-copy-source``'s key, or ``""``."""
    query = request.header("x-amz-copy-source").partition("?")[2]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "versionId":
            return unquote(value)
    return ""


def open_copy_source(
    files: FileStore, request: S3Request, bucket: str, key: str
) -> tuple[int, ObjectInfo]:
    """The copy source open for reading: the version named, else the current one."""
    version = copy_source_version(request)
    return files.versions.open(bucket, key, version) if version else files.open(bucket, key)


def check_copy_conditions(request: S3Request, info: ObjectInfo) -> None:
    """Apply ``x-amz-copy-source-if-*``; a failed one is 412 PreconditionFailed."""
    if check_conditions(
        info.meta.etag,
        info.st.st_mtime,
        request.header("x-amz-copy-source-if-match"),
        request.header("x-amz-copy-source-if-none-match"),
        request.header("x-amz-copy-source-if-modified-since"),
        request.header("x-amz-copy-source-if-unmodified-since"),
    ):
        raise S3Error("PreconditionFailed", "A copy-source condition did not hold.")


async def copy_object(ctx: Context) -> None:
    """PUT /bucket/key with x-amz-copy-source (metadata directive COPY or REPLACE)."""
    request = ctx.request
    check_key(request.key)
    source_bucket, source_key = parse_copy_source(request)
    await ctx.services.buckets.authorize(ctx.caller, source_bucket, write=False)
    replace = request.header("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
    new_meta = meta_from_request(request) if replace else None
    same = (source_bucket, source_key) == (request.bucket, request.key)
    if same and not replace and not copy_source_version(request):
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it copies an object to itself "
            "without changing its metadata.",
            fix="set x-amz-metadata-directive: REPLACE",
        )
    grants = await acl_ops.object_grants_of_write(ctx)
    await ctx.read_small_body(0, too_large="InvalidRequest")
    stored = await ctx.run(_copy, ctx.files, request, source_bucket, source_key, new_meta, grants)
    result = document(
        "CopyObjectResult",
        [element("LastModified", iso_time(stored.mtime_ns / 1e9)), element("ETag", stored.etag)],
    )
    headers = [*ctx.headers, *checksum_headers(stored), *version_headers(stored)]
    await send_xml(ctx.send, 200, result, headers)


def _copy(
    files: FileStore,
    request: S3Request,
    source_bucket: str,
    source_key: str,
    new_meta: ObjectMeta | None,
    grants: dict[str, str],
) -> ObjectMeta:
    fd, info = open_copy_source(files, request, source_bucket, source_key)
    try:
        check_copy_conditions(request, info)
        source = info.meta
        meta = new_meta or ObjectMeta(
            source.etag, 0, 0, source.content_type, dict(source.user), dict(source.headers)
        )
        meta.etag, meta.parts = source.etag, source.parts
        meta.acl = grants  # a copy is a new object: its ACL is the request's, not the source's
        meta.checksum_algorithm, meta.checksum = source.checksum_algorithm, source.checksum
        if is_directory_key(source_key) or is_directory_key(request.key):
            if not (is_directory_key(source_key) and is_directory_key(request.key)):
                raise S3Error("InvalidRequest", "Directory objects copy only to directory keys.")
            return files.make_directory(request.bucket, request.key, meta)
        writer = files.writer(request.bucket, request.key)
        try:
            if source.foreign:
                meta.etag = f'"{copy_with_md5(fd, writer.fd, 0, info.st.st_size).hex()}"'
            else:
                writer.copy_from(fd, 0, info.st.st_size)
            return writer.publish(meta)
        except BaseException:
            writer.abort()
            raise
    finally:
        os.close(fd)


def copy_with_md5(source_fd: int, target_fd: int, offset: int, count: int) -> bytes:
    """Copy a byte range through Python, returning its MD5."""
    md5 = hashlib.md5(usedforsecurity=False)
    end = offset + count
    while offset < end:
        block = os.pread(source_fd, min(8 * READ_BYTES, end - offset), offset)
        if not block:
            raise S3Error("InvalidRange", "The source is shorter than the range.")
        md5.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(target_fd, view) :]
        offset += len(block)
    return md5.digest()
