"""Bucket handlers: ListBuckets, Create/Head/DeleteBucket, location, versioning, listings."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.listing import MAX_KEYS, Page, list_page
from aifactory.objects.s3 import acl_ops
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

REGION = "us-east-1"
MAX_BUCKETS_PAGE = 10_000


def owner_xml(ctx: Context) -> str:
    """``<Owner>`` naming the caller's tenant."""
    tenant = ctx.caller.tenant
    return f"<Owner>{element('ID', tenant)}{element('DisplayName', tenant)}</Owner>"


async def list_buckets(ctx: Context) -> None:
    """GET /, by name, a page of ``max-buckets`` at a time when asked (``continuation-token``)."""
    params = ctx.request.params
    prefix = params.get("prefix", "")
    limit = max_keys_of(ctx, "max-buckets") if "max-buckets" in params else MAX_BUCKETS_PAGE
    if not 1 <= limit <= MAX_BUCKETS_PAGE:
        raise S3Error("InvalidArgument", f"max-buckets must be between 1 and {MAX_BUCKETS_PAGE}.")
    after = _bucket_after(params.get("continuation-token", ""))
    buckets = sorted(
        (name, created)
        for name, created in await ctx.services.buckets.visible(ctx.caller)
        if name.startswith(prefix) and name > after
    )
    page = buckets[:limit]
    entries = "".join(
        f"<Bucket>{element('Name', name)}{element('CreationDate', iso_time(created))}</Bucket>"
        for name, created in page
    )
    parts = [owner_xml(ctx), f"<Buckets>{entries}</Buckets>"]
    if len(buckets) > limit:
        token = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
        parts.append(element("ContinuationToken", token))
    if prefix:
        parts.append(element("Prefix", prefix))
    await send_xml(ctx.send, 200, document("ListAllMyBucketsResult", parts), ctx.headers)


def _bucket_after(token: str) -> str:
    """The bucket name a ListBuckets continuation token resumes after."""
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token is not valid.") from None


async def create_bucket(ctx: Context) -> None:
    """PUT /bucket, with an optional CreateBucketConfiguration body."""
    body = await ctx.read_small_body(64 * 1024)
    if body.strip():
        root = parse_xml(body)
        region = child_text(root, "LocationConstraint")
        if region and region != REGION:
            raise S3Error(
                "InvalidArgument",
                f"This server has one region, {REGION}; {region!r} was asked.",
                fix=f"omit LocationConstraint or use {REGION}",
            )
    grants = await acl_ops.bucket_grants_of_create(ctx)
    try:
        await ctx.services.buckets.create(ctx.caller, ctx.request.bucket)
    except S3Error as exc:
        # As in us-east-1 (the region served): the owner's re-create succeeds and changes
        # nothing, unless it asks for another ACL than the bucket has.
        if exc.code != "BucketAlreadyOwnedByYou":
            raise
        record = await ctx.services.buckets.record(ctx.request.bucket)
        if record is not None and (grants or {}) != record.grants:
            raise S3Error("BucketAlreadyExists", resource=ctx.request.bucket) from None
    else:
        if grants:
            await ctx.services.buckets.set_grants(ctx.request.bucket, grants)
    await send_empty(
        ctx.send, 200, [*ctx.headers, (b"location", f"/{ctx.request.bucket}".encode())]
    )


async def head_bucket(ctx: Context) -> None:
    """HEAD /bucket."""
    await send_empty(ctx.send, 200, [*ctx.headers, (b"x-amz-bucket-region", REGION.encode())])


async def delete_bucket(ctx: Context) -> None:
    """DELETE /bucket (must be empty)."""
    await ctx.services.buckets.delete(ctx.caller, ctx.request.bucket)
    await send_empty(ctx.send, 204, ctx.headers)


async def bucket_location(ctx: Context) -> None:
    """GET /bucket?location (us-east-1 is the empty constraint)."""
    await send_xml(ctx.send, 200, document("LocationConstraint", []), ctx.headers)


def max_keys_of(ctx: Context, name: str = "max-keys") -> int:
    """The page size a listing asks for (``max-keys``), at most ``MAX_KEYS``."""
    value = ctx.request.params.get(name, str(MAX_KEYS))
    try:
        count = int(value)
    except ValueError:
        raise S3Error("InvalidArgument", f"{name} must be a whole number.") from None
    if count < 0:
        raise S3Error("InvalidArgument", f"{name} cannot be negative.")
    return min(count, MAX_KEYS)


def _page(ctx: Context, after: str, skip_prefix: str = "", max_keys: int | None = None) -> Page:
    params = ctx.request.params
    return list_page(
        ctx.files,
        ctx.request.bucket,
        params.get("prefix", ""),
        params.get("delimiter", ""),
        max_keys_of(ctx) if max_keys is None else max_keys,
        after,
        skip_prefix,
    )


def _contents(ctx: Context, page: Page, encode: Callable[[str], str], owner: bool) -> list[str]:
    parts = []
    for info in page.objects:
        size = 0 if info.key.endswith("/") else info.st.st_size
        parts.append(
            f"<Contents>{element('Key', encode(info.key))}"
            f"{element('LastModified', iso_time(info.st.st_mtime))}"
            f"{element('ETag', info.meta.etag)}{element('Size', size)}"
            f"{element('StorageClass', 'STANDARD')}{owner_xml(ctx) if owner else ''}</Contents>"
        )
    parts += [
        f"<CommonPrefixes>{element('Prefix', encode(p))}</CommonPrefixes>" for p in page.prefixes
    ]
    return parts


def _common(
    ctx: Context,
    page: Page,
    encode: Callable[[str], str],
    max_keys: int,
    encode_prefix: bool = True,
) -> list[str]:
    params = ctx.request.params
    prefix = params.get("prefix", "")
    parts = [
        element("Name", ctx.request.bucket),
        element("Prefix", encode(prefix) if encode_prefix else prefix),
        element("MaxKeys", max_keys),
        element("IsTruncated", "true" if page.truncated else "false"),
    ]
    if params.get("delimiter"):
        parts.append(element("Delimiter", encode(params["delimiter"])))
    if params.get("encoding-type"):
        parts.append(element("EncodingType", params["encoding-type"]))
    return parts


def continuation_token(page: Page) -> str:
    """Where the next page starts, as ListObjectsV2's opaque token."""
    kind = "P" if page.last_is_prefix else "K"
    return base64.urlsafe_b64encode(f"{kind}:{page.last}".encode()).decode()


def resume(token: str) -> tuple[str, str]:
    """(after, skip_prefix) of a continuation token."""
    try:
        kind, _, last = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token is not valid.") from None
    if kind not in ("K", "P"):
        raise S3Error("InvalidArgument", "The continuation token is not valid.")
    return last, last if kind == "P" else ""


async def list_objects_v2(ctx: Context) -> None:
    """GET /bucket?list-type=2."""
    params = ctx.request.params
    encode = url_encoder(params.get("encoding-type", ""))
    start_after = params.get("start-after", "")
    after, skip = start_after, ""
    token = params.get("continuation-token")
    if token:
        after, skip = resume(token)
        after = max(after, start_after)
    max_keys = max_keys_of(ctx)
    page = await ctx.run(_page, ctx, after, skip, max_keys)
    parts = _common(ctx, page, encode, max_keys)
    parts.append(element("KeyCount", len(page.objects) + len(page.prefixes)))
    if token is not None:
        parts.append(element("ContinuationToken", token))
    if page.truncated:
        parts.append(element("NextContinuationToken", continuation_token(page)))
    if start_after:
        parts.append(element("StartAfter", encode(start_after)))
    parts += _contents(ctx, page, encode, params.get("fetch-owner") == "true")
    await send_xml(ctx.send, 200, document("ListBucketResult", parts), ctx.headers)


def _marker_resume(ctx: Context, marker: str) -> tuple[str, str]:
    delimiter = ctx.request.params.get("delimiter", "")
    if delimiter and marker.endswith(delimiter):
        return marker, marker  # a common prefix handed out as NextMarker
    return marker, ""


async def list_objects_v1(ctx: Context) -> None:
    """GET /bucket (ListObjects, the original version)."""
    params = ctx.request.params
    encode = url_encoder(params.get("encoding-type", ""))
    marker = params.get("marker", "")
    after, skip = _marker_resume(ctx, marker)
    max_keys = max_keys_of(ctx)
    page = await ctx.run(_page, ctx, after, skip, max_keys)
    # ListObjects (v1) answers its Prefix as sent, encoding-type or not (SDKs decode no other).
    parts = _common(ctx, page, encode, max_keys, encode_prefix=False)
    parts.append(element("Marker", encode(marker)))
    if page.truncated:
        parts.append(element("NextMarker", encode(page.last)))
    parts += _contents(ctx, page, encode, True)
    await send_xml(ctx.send, 200, document("ListBucketResult", parts), ctx.headers)


async def list_object_versions(ctx: Context) -> None:
    """GET /bucket?versions: every object is its only version, ``null``."""
    params = ctx.request.params
    encode = url_encoder(params.get("encoding-type", ""))
    marker = params.get("key-marker", "")
    after, skip = _marker_resume(ctx, marker)
    max_keys = max_keys_of(ctx)
    page = await ctx.run(_page, ctx, after, skip, max_keys)
    parts = _common(ctx, page, encode, max_keys)
    parts += [element("KeyMarker", encode(marker)), element("VersionIdMarker", "")]
    if page.truncated:
        parts += [
            element("NextKeyMarker", encode(page.last)),
            element("NextVersionIdMarker", "null"),
        ]
    for info in page.objects:
        size = 0 if info.key.endswith("/") else info.st.st_size
        parts.append(
            f"<Version>{element('Key', encode(info.key))}{element('VersionId', 'null')}"
            f"{element('IsLatest', 'true')}{element('LastModified', iso_time(info.st.st_mtime))}"
            f"{element('ETag', info.meta.etag)}{element('Size', size)}"
            f"{element('StorageClass', 'STANDARD')}{owner_xml(ctx)}</Version>"
        )
    parts += [
        f"<CommonPrefixes>{element('Prefix', encode(p))}</CommonPrefixes>" for p in page.prefixes
    ]
    await send_xml(ctx.send, 200, document("ListVersionsResult", parts), ctx.headers)
