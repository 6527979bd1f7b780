"""CORS on the S3 API: Put/Get/DeleteBucketCors, preflights, and the headers of answers.

::

    OPTIONS /bucket[/key]  Origin + Access-Control-Request-Method (+ -Headers)
        -> the first matching rule's Allow-Origin/Methods/Headers, Max-Age, Expose-Headers
        -> 403 AccessForbidden when no rule matches; 400 without Origin or method
    any other request with Origin -> the matching rule's headers on the answer (errors too)

Preflights carry no signature, so they are answered before authentication,
from the bucket's rules alone (``CorsConfigurations``).
"""

from __future__ import annotations

import base64
import hashlib

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.paths import check_bucket_name
from aifactory.objects.s3.context import Context
from aifactory.objects.s3.cors import (
    configuration_document,
    matching_rule,
    parse_configuration,
    requested_headers,
)
from aifactory.objects.s3.cors_store import CorsConfigurations
from aifactory.objects.s3.request import S3Request
from aifactory.objects.s3.responses import send_empty, send_xml

MAX_CORS_BODY_BYTES = 64 * 1024
_FORBIDDEN = (
    "CORSResponse: This CORS request is not allowed. The Origin, the request method "
    "(Access-Control-Request-Method) or the Access-Control-Request-Headers are not allowed "
    "by the bucket's CORS configuration."
)


async def get_bucket_cors(ctx: Context) -> None:
    """GET /bucket?cors."""
    await _require_owner(ctx)
    rules = await ctx.services.cors.rules(ctx.request.bucket)
    if not rules:
        raise S3Error("NoSuchCORSConfiguration", resource=ctx.request.bucket)
    await send_xml(ctx.send, 200, configuration_document(rules), ctx.headers)


async def put_bucket_cors(ctx: Context) -> None:
    """PUT /bucket?cors."""
    await _require_owner(ctx)
    body = await ctx.read_small_body(MAX_CORS_BODY_BYTES)
    content_md5 = ctx.request.header("content-md5")
    if content_md5 and content_md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match.")
    rules = parse_configuration(body)
    stamp = await ctx.services.cors.stamp(ctx.request.bucket)
    await ctx.run(ctx.services.cors.save, ctx.request.bucket, stamp, rules)
    await send_empty(ctx.send, 200, ctx.headers)


async def delete_bucket_cors(ctx: Context) -> None:
    """DELETE /bucket?cors."""
    await _require_owner(ctx)
    await ctx.run(ctx.services.cors.drop, ctx.request.bucket)
    await send_empty(ctx.send, 204, ctx.headers)


async def _require_owner(ctx: Context) -> None:
    """Only the bucket's owner (or an admin) reads and changes its CORS rules."""
    caller, bucket = ctx.caller, ctx.request.bucket
    record = await ctx.services.buckets.record(bucket)
    if caller.is_admin or (record is not None and record.tenant_id == caller.tenant_id):
        return
    raise S3Error(
        "AccessDenied",
        "Only the bucket's owner may read or change its CORS configuration.",
        resource=bucket,
    )


async def preflight(
    request: S3Request, configurations: CorsConfigurations, form_origin: str
) -> list[tuple[bytes, bytes]]:
    """The headers of an allowed preflight (OPTIONS) request.

    The dashboard's form uploads are preflighted too (a page that watches
    an upload's progress makes the browser ask first): see ``response_headers``.

    Raises:
        S3Error: BadRequest without Origin or Access-Control-Request-Method,
            InvalidBucketName, AccessForbidden when no rule allows the request.
    """
    origin = request.header("origin")
    method = request.header("access-control-request-method")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    if not method:
        raise S3Error(
            "BadRequest",
            "Insufficient information. Access-Control-Request-Method request header needed.",
        )
    if not request.bucket:
        raise S3Error("AccessForbidden", _FORBIDDEN)
    check_bucket_name(request.bucket)
    wanted = requested_headers(request.header("access-control-request-headers"))
    if _dashboard_form(request, origin, method, form_origin):
        return [
            *_dashboard_headers(origin),
            (b"access-control-allow-methods", b"POST"),
            *([(b"access-control-allow-headers", ", ".join(wanted).encode())] if wanted else []),
            (b"access-control-max-age", b"600"),
        ]
    rule = matching_rule(await configurations.rules(request.bucket), origin, method, wanted)
    if rule is None:
        raise S3Error("AccessForbidden", _FORBIDDEN, resource=request.resource)
    return rule.preflight_headers(origin, wanted)


async def response_headers(
    request: S3Request, configurations: CorsConfigurations, form_origin: str
) -> list[tuple[bytes, bytes]]:
    """The CORS headers of an actual (non-preflight) request's answer; [] when none apply.

    ``form_origin`` is the dashboard's origin: its form uploads (POST to a
    bucket) may read their answer whatever the bucket's rules, since the
    form itself carries a policy the dashboard had signed for the caller.
    """
    origin = request.header("origin")
    if not origin or not request.bucket:
        return []
    if _dashboard_form(request, origin, request.method, form_origin):
        return _dashboard_headers(origin)
    try:
        check_bucket_name(request.bucket)
    except S3Error:
        return []
    method = request.header("access-control-request-method") or request.method
    rule = matching_rule(await configurations.rules(request.bucket), origin, method, [])
    return [] if rule is None else rule.response_headers(origin)


def _dashboard_form(request: S3Request, origin: str, method: str, form_origin: str) -> bool:
    """Whether this is the dashboard posting a form to a bucket (or asking to)."""
    return (
        bool(form_origin)
        and origin == form_origin
        and method == "POST"
        and not request.key
        and not request.params
    )


def _dashboard_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode()),
        (b"access-control-expose-headers", b"ETag, Location"),
        (b"vary", b"Origin"),
    ]
