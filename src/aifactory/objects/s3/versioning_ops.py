"""Versioning handlers: Put/GetBucketVersioning, ListObjectVersions, versioned deletes.

A bucket that never had versioning answers as before (each object its one
``null`` version); once on, versions are kept by ``posix.versions``. Only
the bucket's tenant (or an admin) turns versioning on or pauses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.listing import MAX_KEYS, list_page
from aifactory.objects.posix.paths import check_key
from aifactory.objects.posix.storage import FileStore, ObjectInfo
from aifactory.objects.posix.versions import ENABLED, NULL, SUSPENDED, Deleted, KeptVersion
from aifactory.objects.s3 import bucket_ops, object_ops
from aifactory.objects.s3.context import Context
from aifactory.objects.s3.responses import (
    child_text,
    document,
    element,
    iso_time,
    parse_xml,
    send_empty,
    send_xml,
    url_encoder,
)


async def put_bucket_versioning(ctx: Context) -> None:
    """PUT /bucket?versioning: Enabled or Suspended (never off again, as S3)."""
    await ctx.services.buckets.owner(ctx.caller, ctx.request.bucket)
    root = parse_xml(await ctx.read_small_body(64 * 1024))
    status = child_text(root, "Status")
    if status not in (ENABLED, SUSPENDED):
        raise S3Error("MalformedXML", "Status must be Enabled or Suspended.")
    if child_text(root, "MfaDelete") == ENABLED:
        raise S3Error("NotImplemented", "MFA delete is not implemented by aifactory.")
    await ctx.run(ctx.files.versions.set_status, ctx.request.bucket, status)
    await send_empty(ctx.send, 200, ctx.headers)


async def get_bucket_versioning(ctx: Context) -> None:
    """GET /bucket?versioning."""
    status = await ctx.run_quick(ctx.files.versions.status, ctx.request.bucket)
    inner = [element("Status", status)] if status else []
    await send_xml(ctx.send, 200, document("VersioningConfiguration", inner), ctx.headers)


async def delete_object(ctx: Context) -> None:
    """DELETE /bucket/key[?versionId=]: a delete marker, or one version gone for good."""
    request = ctx.request
    version = request.params.get("versionId", "")
    status = await ctx.run_quick(ctx.files.versions.status, request.bucket)
    if not status:
        await object_ops.delete_object(ctx)  # every object's one version is null
        return
    check_key(request.key)
    if request.header("if-match"):
        raise S3Error("NotImplemented", "If-Match on deletes in versioned buckets.")
    deleted = await ctx.run(_delete, ctx.files, request.bucket, request.key, version)
    await send_empty(ctx.send, 204, [*ctx.headers, *_deleted_headers(deleted)])


async def delete_objects(ctx: Context) -> None:
    """POST /bucket?delete in a versioned bucket (or naming versions)."""
    status = await ctx.run_quick(ctx.files.versions.status, ctx.request.bucket)
    if not status:
        await object_ops.delete_objects(ctx)
        return
    root = parse_xml(await ctx.read_small_body(2 * 1024 * 1024))
    quiet = child_text(root, "Quiet").lower() == "true"
    targets = [(child_text(o, "Key"), child_text(o, "VersionId")) for o in root.findall("Object")]
    if len(targets) > object_ops.MAX_DELETE_KEYS:
        raise S3Error("MalformedXML", f"At most {object_ops.MAX_DELETE_KEYS} keys per request.")
    parts = []
    for key, version in targets:
        try:
            check_key(key)
            deleted = await ctx.run(_delete, ctx.files, ctx.request.bucket, key, version)
        except S3Error as exc:
            parts.append(
                f"<Error>{element('Key', key)}{element('Code', exc.code)}"
                f"{element('Message', exc.message)}</Error>"
            )
            continue
        if quiet:
            continue
        found = [element("Key", key)]
        if version:
            found.append(element("VersionId", version))
        if deleted.marker:
            found.append(element("DeleteMarker", "true"))
            found.append(element("DeleteMarkerVersionId", deleted.version_id))
        parts.append(f"<Deleted>{''.join(found)}</Deleted>")
    await send_xml(ctx.send, 200, document("DeleteResult", parts), ctx.headers)


def _delete(files: FileStore, bucket: str, key: str, version: str) -> Deleted:
    if not files.bucket_exists(bucket):
        raise S3Error("NoSuchBucket", resource=bucket)
    return files.versions.remove(bucket, key, version)


def _deleted_headers(deleted: Deleted) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-amz-version-id", deleted.version_id.encode())]
    if deleted.marker:
        headers.append((b"x-amz-delete-marker", b"true"))
    return headers


@dataclass
class _Entry:
    """One line of a versions listing."""

    key: str
    version_id: str
    latest: bool
    marker: bool
    modified: float
    etag: str = ""
    size: int = 0


async def list_object_versions(ctx: Context) -> None:
    """GET /bucket?versions."""
    status = await ctx.run_quick(ctx.files.versions.status, ctx.request.bucket)
    if not status:
        await bucket_ops.list_object_versions(ctx)
        return
    params = ctx.request.params
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
    encode = url_encoder(params.get("encoding-type", ""))
    key_marker, version_marker = params.get("key-marker", ""), params.get("version-id-marker", "")
    max_keys = bucket_ops.max_keys_of(ctx)
    entries = await ctx.run(_entries, ctx.files, ctx.request.bucket, prefix)
    shown: list[_Entry | str] = []
    seen_prefixes: set[str] = set()
    truncated = False
    for entry in entries[_start(entries, key_marker, version_marker, delimiter) :]:
        common = _common_prefix(entry.key, prefix, delimiter)
        if common is not None and common in seen_prefixes:
            continue
        if len(shown) >= max_keys:
            truncated = True
            break
        if common is not None:
            seen_prefixes.add(common)
            shown.append(common)
        else:
            shown.append(entry)
    parts = [
        element("Name", ctx.request.bucket),
        element("Prefix", encode(prefix)),
        element("KeyMarker", encode(key_marker)),
        element("VersionIdMarker", version_marker),
        element("MaxKeys", max_keys),
        element("IsTruncated", "true" if truncated else "false"),
    ]
    if delimiter:
        parts.append(element("Delimiter", encode(delimiter)))
    if params.get("encoding-type"):
        parts.append(element("EncodingType", params["encoding-type"]))  # clients decode by it
    if truncated and shown:
        last = shown[-1]
        next_key = last if isinstance(last, str) else last.key
        parts.append(element("NextKeyMarker", encode(next_key)))
        if not isinstance(last, str):
            parts.append(element("NextVersionIdMarker", last.version_id))
    owner = bucket_ops.owner_xml(ctx)
    for item in shown:
        if isinstance(item, str):
            continue
        head = (
            f"{element('Key', encode(item.key))}{element('VersionId', item.version_id)}"
            f"{element('IsLatest', 'true' if item.latest else 'false')}"
            f"{element('LastModified', iso_time(item.modified))}"
        )
        if item.marker:
            parts.append(f"<DeleteMarker>{head}{owner}</DeleteMarker>")
        else:
            parts.append(
                f"<Version>{head}{element('ETag', item.etag)}{element('Size', item.size)}"
                f"{element('StorageClass', 'STANDARD')}{owner}</Version>"
            )
    parts += [
        f"<CommonPrefixes>{element('Prefix', encode(p))}</CommonPrefixes>"
        for p in shown
        if isinstance(p, str)
    ]
    await send_xml(ctx.send, 200, document("ListVersionsResult", parts), ctx.headers)


def _start(entries: list[_Entry], key_marker: str, version_marker: str, delimiter: str) -> int:
    """Where a page after (``key_marker``, ``version_marker``) starts.

    The marker's version may be gone (a client deleting page by page): then
    the page starts at the next older version of that key, by the time
    version ids begin with.
    """
    if not key_marker:
        return 0
    for index, entry in enumerate(entries):
        if entry.key == key_marker and version_marker and entry.version_id == version_marker:
            return index + 1
    for index, entry in enumerate(entries):
        if entry.key > key_marker and not (
            delimiter and key_marker.endswith(delimiter) and entry.key.startswith(key_marker)
        ):
            return index
        if (
            entry.key == key_marker
            and version_marker
            and _id_time(entry.version_id) < _id_time(version_marker)
        ):
            return index
    return len(entries)


def _id_time(version_id: str) -> int:
    """When a version id was made (``null``: before any)."""
    try:
        return int(version_id[:16], 16) if version_id != NULL else 0
    except ValueError:
        return 0


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


def _entries(files: FileStore, bucket: str, prefix: str) -> list[_Entry]:
    """Every version of every key under ``prefix``: by key, newest first."""
    current: dict[str, ObjectInfo] = {}
    after = ""
    while True:
        page = list_page(files, bucket, prefix, "", MAX_KEYS, after)
        current.update((info.key, info) for info in page.objects)
        if not page.truncated:
            break
        after = page.last
    kept = files.versions.kept(bucket, prefix)
    entries = []
    for key in sorted(set(current) | set(kept)):
        info = current.get(key)
        if info is not None:
            size = 0 if key.endswith("/") else info.st.st_size
            version_id = info.meta.version_id or NULL
            entries.append(
                _Entry(key, version_id, True, False, info.st.st_mtime, info.meta.etag, size)
            )
        for index, version in enumerate(kept.get(key, [])):
            entries.append(_kept_entry(key, version, latest=info is None and index == 0))
    return entries


def _kept_entry(key: str, version: KeptVersion, latest: bool) -> _Entry:
    if version.meta is None:
        return _Entry(key, version.version_id, latest, True, version.since_ns / 1e9)
    meta = version.meta
    return _Entry(key, version.version_id, latest, False, meta.mtime_ns / 1e9, meta.etag, meta.size)
