"""The S3 API as a raw ASGI app: authenticate, route, serve; errors become XML.

::

    request -> S3Request (path or virtual-host style) -> signature (auth.py)
            -> route by method, bucket/key and sub-resource (?uploads, ?delete, ...)
            -> bucket access (access.py) -> handler (bucket_ops, object_ops, multipart_ops)
    any S3Error -> XML error document with the request id (HEAD: no body)

Raw ASGI on uvicorn because it measured the least CPU per request here; the
handlers keep disk I/O on a thread pool so the event loop only moves bytes,
except a small request's few microseconds of file work on a local
filesystem, which costs less done in place than handed over (``Context``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from starlette.types import Message, Receive, Scope, Send

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.multipart import Multipart
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.s3 import (
    acl_ops,
    bucket_ops,
    cors_ops,
    multipart_ops,
    object_ops,
    versioning_ops,
)
from aifactory.objects.s3.access import BucketRegistry
from aifactory.objects.s3.anonymous import AnonymousLimit
from aifactory.objects.s3.auth import Caller, Credentials, PayloadCheck, authenticate
from aifactory.objects.s3.context import Context, Services, Stats
from aifactory.objects.s3.cors_store import CorsConfigurations
from aifactory.objects.s3.post_object import FormUpload, is_form_upload
from aifactory.objects.s3.request import S3Request, parse_request
from aifactory.objects.s3.responses import send_empty, send_error

logger = logging.getLogger(__name__)

Handler = Callable[[Context], Awaitable[None]]
IO_THREADS = 32

# Sub-resources this server does not implement: a clear 501 beats a wrong answer.
_UNSUPPORTED = frozenset(
    {
        "policy", "lifecycle", "tagging", "website", "logging",
        "notification", "replication", "encryption", "object-lock", "ownershipControls",
        "publicAccessBlock", "accelerate", "requestPayment", "inventory", "metrics",
        "analytics", "intelligent-tiering", "retention", "legal-hold", "torrent",
        "restore", "select", "policyStatus",
    }
)  # fmt: skip


UsageHook = Callable[[Caller, str, str, int, int], None]
# Told (caller, bucket, key, whether it wrote) after each object read or write served.
ObjectHook = Callable[[Caller, str, str, bool], None]


class ObjectsApp:
    """ASGI app serving the S3 API over a FileStore.

    Args:
        files: The directory tree served.
        credentials: Access key id -> caller and secret.
        buckets: Bucket ownership and access checks.
        multipart: Staged multipart uploads.
        domain: Virtual-host domain (``bucket.DOMAIN``), or ``""`` for path style only.
        on_usage: Told, after each authenticated request, who moved how many bytes
            in and out of which bucket (the usage ledger).
        on_object: Told, after each object read or write it served, by whom
            and which key (the catalog's lineage).
        anonymous_rps: Unsigned reads of public data each client address may
            make per second (0: none).
        form_origin: The dashboard's origin, whose form uploads may read their answers.
    """

    def __init__(
        self,
        files: FileStore,
        credentials: Credentials,
        buckets: BucketRegistry,
        multipart: Multipart,
        domain: str = "",
        on_usage: UsageHook | None = None,
        on_object: ObjectHook | None = None,
        anonymous_rps: float = 0.0,
        form_origin: str = "",
    ) -> None:
        self._credentials = credentials
        self._anonymous = AnonymousLimit(anonymous_rps)
        self._on_usage = on_usage
        self._on_object = on_object
        self._domain = domain.lower().strip(".")
        self._form_origin = form_origin
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="s3-io")
        cors = CorsConfigurations(files.system_dir, buckets.record)
        self._services = Services(files, multipart, buckets, self._executor, self.stats, cors)

    @property
    def services(self) -> Services:
        """The stores, I/O pool and counters the handlers share (the dashboard uses them too)."""
        return self._services

    def close(self) -> None:
        """Stop the I/O threads (after the server stopped serving)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        if scope["type"] != "http":
            return
        request_id = secrets.token_hex(8).upper()
        headers = [
            (b"x-amz-request-id", request_id.encode()),
            (b"x-amz-id-2", request_id.encode()),
            (b"server", b"aifactory"),
        ]
        head = scope["method"] == "HEAD"
        started = False
        body_read = not _has_body(scope)
        moved = [0, 0]  # bytes in, bytes out

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            moved[1] += len(message.get("body", b""))
            await send(message)

        async def tracking_receive() -> Message:
            nonlocal body_read
            message = await receive()
            moved[0] += len(message.get("body", b""))
            if not message.get("more_body", False):
                body_read = True
            return message

        self.stats.in_flight += 1
        try:
            request = parse_request(scope, self._domain, request_id)
            if request.method == "OPTIONS":
                cors = self._services.cors
                allowed = await cors_ops.preflight(request, cors, self._form_origin)
                await send_empty(tracking_send, 200, [*headers, *allowed])
                return
            if "origin" in request.headers:
                cors = self._services.cors
                headers += await cors_ops.response_headers(request, cors, self._form_origin)
            client = scope.get("client")
            address = client[0] if client else ""
            await self._serve(
                request, address, tracking_receive, tracking_send, headers, moved, scope["scheme"]
            )
        except S3Error as exc:
            self._count_error(exc.code or "")
            if started:
                logger.warning("S3 error after the response started: %s", exc)
                raise
            extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            if not body_read:
                extra.append(_CLOSE)
            await send_error(send, exc, request_id, [*headers, *extra], head)
        except Exception:
            logger.exception("S3 request %s failed", request_id)
            self._count_error("InternalError")
            if started:
                raise
            extra = [] if body_read else [_CLOSE]
            await send_error(send, S3Error("InternalError"), request_id, [*headers, *extra], head)
        finally:
            self.stats.in_flight -= 1

    def _count_error(self, code: str) -> None:
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1

    async def _serve(
        self,
        request: S3Request,
        address: str,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        moved: list[int],
        scheme: str,
    ) -> None:
        handler: Handler
        key = request.key
        if is_form_upload(request):
            form = await FormUpload.read(request, receive, self._credentials, scheme)
            caller, payload = form.caller, PayloadCheck()
            name, handler, write, key = "PostObject", form.serve, True, form.key
        else:
            caller, payload = await authenticate(request, self._credentials)
            try:
                name, handler, write = route(request)
            except S3Error:
                if caller.anonymous:
                    self._anonymous.admit("", address)  # no read: refused as unsigned
                raise
        self.stats.requests[name] = self.stats.requests.get(name, 0) + 1
        if caller.anonymous:
            self._anonymous.admit(name, address)
        if name in _NEEDS_LENGTH and not _says_length(request):
            raise S3Error("MissingContentLength", fix="send Content-Length (or a chunked body)")
        buckets = self._services.buckets
        object_read = None
        if name in _OBJECT_READS:
            object_read = await buckets.authorize_object_read(caller, request.bucket, request.key)
        elif request.bucket and name not in ("CreateBucket", "DeleteBucket"):
            await buckets.authorize(caller, request.bucket, write, name in _LISTINGS)
        room = buckets.room if write and name in _ADDS_BYTES else None
        if room is not None:
            await room.check(request.bucket, _declared_length(request))
        context = Context(
            request, caller, payload, receive, send, self._services, headers, object_read
        )
        try:
            await handler(context)
            if self._on_object is not None and name in _OBJECT_IO and not caller.anonymous:
                self._on_object(caller, request.bucket, key, _OBJECT_IO[name])
        except S3Error as exc:
            if object_read is not None and not object_read.lists and exc.code == "NoSuchKey":
                # Only the object's ACL could have let this caller in: no word on what exists.
                raise S3Error("AccessDenied", resource=request.resource) from None
            raise
        finally:
            if room is not None:
                await room.wrote(request.bucket, moved[0])
            if self._on_usage is not None and not caller.anonymous:
                self._on_usage(caller, request.bucket, name, moved[0], moved[1])


# The requests that read or write an object's bytes (True: write).
_OBJECT_IO = {
    "GetObject": False,
    "PutObject": True,
    "PostObject": True,
    "CopyObject": True,
    "CompleteMultipartUpload": True,
}

# The reads an object's own ACL (or the catalog) may allow where its bucket does not.
_OBJECT_READS = frozenset({"GetObject", "HeadObject"})

# What a group's read grant on a bucket allows (as on S3: its keys, not their bytes).
_LISTINGS = frozenset(
    {"ListObjects", "ListObjectsV2", "ListObjectVersions", "HeadBucket", "GetBucketLocation"}
)

# The requests that add bytes to a bucket (and count against its tenant's bytes quota).
_ADDS_BYTES = frozenset({"PutObject", "UploadPart", "CopyObject", "PostObject"})


# Writes whose body S3 wants announced: without a length (or chunks) it is lost on the way.
_NEEDS_LENGTH = frozenset({"PutObject", "UploadPart"})


def _says_length(request: S3Request) -> bool:
    return "content-length" in request.headers or "transfer-encoding" in request.headers


def _declared_length(request: S3Request) -> int:
    """The bytes a write says it brings (0 when it does not say, e.g. a copy)."""
    text = request.header("x-amz-decoded-content-length") or request.header("content-length")
    return int(text) if text.isdigit() else 0


# An error answered before the body was read (e.g. after `Expect: 100-continue`, when
# the client never sends it) leaves the connection out of step: close it.
_CLOSE = (b"connection", b"close")


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def route(request: S3Request) -> tuple[str, Handler, bool]:
    """(operation name, handler, whether it writes) of a request.

    Raises:
        S3Error: MethodNotAllowed or NotImplemented.
    """
    method, params = request.method, request.params
    unsupported = _UNSUPPORTED.intersection(params)
    if unsupported:
        raise S3Error(
            "NotImplemented",
            f"The {sorted(unsupported)[0]!r} sub-resource is not implemented by aifactory.",
        )
    if not request.bucket:
        if method == "GET":
            return "ListBuckets", bucket_ops.list_buckets, False
        raise S3Error("MethodNotAllowed")
    if not request.key:
        return _bucket_route(method, params)
    return _object_route(method, params, request)


def _bucket_route(method: str, params: dict[str, str]) -> tuple[str, Handler, bool]:
    if "cors" in params:
        return _cors_route(method)
    if method == "GET":
        if "location" in params:
            return "GetBucketLocation", bucket_ops.bucket_location, False
        if "acl" in params:
            return "GetBucketAcl", acl_ops.get_bucket_acl, False
        if "versioning" in params:
            return "GetBucketVersioning", versioning_ops.get_bucket_versioning, False
        if "versions" in params:
            return "ListObjectVersions", versioning_ops.list_object_versions, False
        if "uploads" in params:
            return "ListMultipartUploads", multipart_ops.list_uploads, False
        if params.get("list-type") == "2":
            return "ListObjectsV2", bucket_ops.list_objects_v2, False
        return "ListObjects", bucket_ops.list_objects_v1, False
    if method == "HEAD":
        return "HeadBucket", bucket_ops.head_bucket, False
    if method == "PUT" and "acl" in params:
        return "PutBucketAcl", acl_ops.put_bucket_acl, True
    if method == "PUT" and "versioning" in params:
        return "PutBucketVersioning", versioning_ops.put_bucket_versioning, True
    if method == "PUT" and not params:
        return "CreateBucket", bucket_ops.create_bucket, True
    if method == "DELETE" and not params:
        return "DeleteBucket", bucket_ops.delete_bucket, True
    if method == "POST" and "delete" in params:
        return "DeleteObjects", versioning_ops.delete_objects, True
    raise S3Error("MethodNotAllowed")


def _cors_route(method: str) -> tuple[str, Handler, bool]:
    if method == "GET":
        return "GetBucketCors", cors_ops.get_bucket_cors, False
    if method == "PUT":
        return "PutBucketCors", cors_ops.put_bucket_cors, True
    if method == "DELETE":
        return "DeleteBucketCors", cors_ops.delete_bucket_cors, True
    raise S3Error("MethodNotAllowed")


def _object_route(
    method: str, params: dict[str, str], request: S3Request
) -> tuple[str, Handler, bool]:
    if method == "GET":
        if "uploadId" in params:
            return "ListParts", multipart_ops.list_parts, False
        if "attributes" in params:
            return "GetObjectAttributes", object_ops.get_object_attributes, False
        if "acl" in params:
            return "GetObjectAcl", acl_ops.get_object_acl, False
        return "GetObject", _get, False
    if method == "HEAD":
        return "HeadObject", _head, False
    if method == "PUT":
        if "acl" in params:
            return "PutObjectAcl", acl_ops.put_object_acl, True
        if "uploadId" in params and "partNumber" in params:
            return "UploadPart", multipart_ops.upload_part, True
        if request.header("x-amz-copy-source"):
            return "CopyObject", object_ops.copy_object, True
        return "PutObject", object_ops.put_object, True
    if method == "DELETE":
        if "uploadId" in params:
            return "AbortMultipartUpload", multipart_ops.abort_upload, True
        return "DeleteObject", versioning_ops.delete_object, True
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload", multipart_ops.create_upload, True
        if "uploadId" in params:
            return "CompleteMultipartUpload", multipart_ops.complete_upload, True
    raise S3Error("MethodNotAllowed")


async def _get(context: Context) -> None:
    await object_ops.get_object(context, head=False)


async def _head(context: Context) -> None:
    await object_ops.get_object(context, head=True)
