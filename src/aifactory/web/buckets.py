"""The buckets page's data: browse, upload, download and delete objects; create buckets.

The page talks only to ``ObjectBrowser``, built elsewhere (``aifactory.objects``);
until a control plane has object storage it passes None and every route says
storage is not enabled. Routes, all under ``/api/dashboard`` and all behind the
caller's API key, checked exactly like its S3 credentials::

    GET    /api/dashboard/buckets                            buckets the key may use
    POST   /api/dashboard/buckets  {"name": NAME}             create one for the key's tenant
    GET    /api/dashboard/buckets/{bucket}/objects?prefix=&delimiter=&token=&limit=
    PUT    /api/dashboard/buckets/{bucket}/object?key=KEY    upload the raw body
    POST   /api/dashboard/buckets/{bucket}/upload-form  {"key", "content_type"}
                                                   a signed form to upload straight to S3
    GET    /api/dashboard/buckets/{bucket}/object?key=KEY    download (attachment)
    DELETE /api/dashboard/buckets/{bucket}/object?key=KEY    delete

Keys travel in the query string, so any S3 key (``a/b``, ``%``, ``..``) reaches
the objects package's key checks as typed, never through path normalisation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aifactory.errors import BadRequest, NotFound
from aifactory.input_limits import parse_json
from aifactory.tenancy import Principal

NOT_ENABLED = "object storage not enabled"
DEFAULT_PAGE = 200
MAX_PAGE = 1000
_MAX_CONTENT_TYPE = 255


class Download(Protocol):
    """An object opened for download; ``aclose`` must follow, whatever happens."""

    key: str
    size: int
    etag: str
    content_type: str
    modified: float

    def chunks(self) -> AsyncIterator[bytes]:
        """The object's bytes, in bounded pieces."""
        ...

    async def aclose(self) -> None:
        """Release the open file."""
        ...


class ObjectBrowser(Protocol):
    """What the buckets page needs from object storage.

    Every method but ``buckets`` checks ``caller`` against the bucket as S3
    does and raises the storage's own errors (``APIError`` subclasses with an
    S3 code: NoSuchBucket, AccessDenied, NoSuchKey, InvalidArgument, ...).
    """

    async def buckets(self, tenant: str | None) -> list[dict[str, Any]]:
        """Buckets of ``tenant`` (None: every tenant's), each with ``name`` and ``objects``.

        Args:
            tenant: The tenant whose buckets to list, or None for an admin.

        Returns:
            One dict per bucket, at least ``{"name": str, "objects": int}``.
        """
        ...

    async def create_bucket(self, caller: Principal, bucket: str) -> None:
        """Create ``bucket`` owned by the caller's tenant."""
        ...

    async def list_objects(
        self, caller: Principal, bucket: str, prefix: str, delimiter: str, token: str, limit: int
    ) -> dict[str, Any]:
        """One page of keys: ``{"objects": [...], "prefixes": [...], "next": token|None}``."""
        ...

    async def put_object(
        self, caller: Principal, bucket: str, key: str, content_type: str, receive: Receive
    ) -> dict[str, Any]:
        """Stream the request body from ``receive`` into ``key``; ``{"key", "size", "etag"}``."""
        ...

    async def get_object(self, caller: Principal, bucket: str, key: str) -> Download:
        """Open ``key`` for download."""
        ...

    async def upload_form(
        self, caller: Principal, bucket: str, key: str, content_type: str
    ) -> dict[str, Any]:
        """A form, signed for the caller, to post one file to S3: ``{"url", "fields", ...}``."""
        ...

    async def delete_object(self, caller: Principal, bucket: str, key: str) -> None:
        """Delete ``key`` (nothing to do when it is absent)."""
        ...


Authenticate = Callable[[Request], Awaitable[Principal]]


class BucketsData:
    """The buckets page's routes.

    Args:
        objects: Object storage to browse, or None while it is not enabled.
        authenticate: Checks the request carries a valid key; raises otherwise.
    """

    def __init__(self, objects: ObjectBrowser | None, authenticate: Authenticate) -> None:
        self._objects = objects
        self._authenticate = authenticate

    def routes(self) -> list[Route]:
        """Every route of the buckets page."""
        base = "/api/dashboard/buckets"
        return [
            Route(base, self.list_buckets, methods=["GET"]),
            Route(base, self.create_bucket, methods=["POST"]),
            Route(base + "/{bucket}/objects", self.list_objects, methods=["GET"]),
            Route(base + "/{bucket}/object", self.upload_object, methods=["PUT"]),
            Route(base + "/{bucket}/upload-form", self.upload_form, methods=["POST"]),
            Route(base + "/{bucket}/object", self.download_object, methods=["GET"]),
            Route(base + "/{bucket}/object", self.delete_object, methods=["DELETE"]),
        ]

    async def list_buckets(self, request: Request) -> Response:
        """GET: the caller's buckets, or why there are none."""
        caller = await self._authenticate(request)
        if self._objects is None:
            return JSONResponse({"enabled": False, "message": NOT_ENABLED, "buckets": []})
        tenant = None if caller.is_admin else caller.tenant
        rows = await self._objects.buckets(tenant)
        return JSONResponse({"enabled": True, "message": "", "buckets": rows})

    async def create_bucket(self, request: Request) -> Response:
        """POST {"name": NAME}: a bucket owned by the caller's tenant."""
        caller = await self._authenticate(request)
        objects = self._enabled()
        document = parse_json(await request.body())
        name = document.get("name") if isinstance(document, dict) else None
        if not isinstance(name, str):
            raise BadRequest('Send {"name": BUCKET}.', param="name")
        await objects.create_bucket(caller, name)
        return JSONResponse({"name": name, "tenant": caller.tenant}, status_code=201)

    async def list_objects(self, request: Request) -> Response:
        """GET …/objects: one page of keys, folded into folders at ``delimiter``."""
        caller = await self._authenticate(request)
        objects = self._enabled()
        query = request.query_params
        page = await objects.list_objects(
            caller,
            request.path_params["bucket"],
            query.get("prefix", ""),
            query.get("delimiter", ""),
            query.get("token", ""),
            _limit(query.get("limit", "")),
        )
        return JSONResponse(page)

    async def upload_object(self, request: Request) -> Response:
        """PUT …/object?key=KEY: the raw body becomes the object, streamed to disk."""
        caller = await self._authenticate(request)
        objects = self._enabled()
        content_type = request.headers.get("content-type", "")[:_MAX_CONTENT_TYPE]
        stored = await objects.put_object(
            caller, request.path_params["bucket"], _key(request), content_type, request.receive
        )
        return JSONResponse(stored, status_code=201)

    async def upload_form(self, request: Request) -> Response:
        """POST …/upload-form {"key": KEY, "content_type": TYPE}: a form the browser posts to S3."""
        caller = await self._authenticate(request)
        objects = self._enabled()
        document = parse_json(await request.body())
        key = document.get("key") if isinstance(document, dict) else None
        content_type = document.get("content_type", "") if isinstance(document, dict) else None
        if not isinstance(key, str) or not key or not isinstance(content_type, str):
            raise BadRequest('Send {"key": KEY, "content_type": TYPE}.', param="key")
        form = await objects.upload_form(
            caller,
            request.path_params["bucket"],
            key,
            content_type[:_MAX_CONTENT_TYPE] or "application/octet-stream",
        )
        return JSONResponse(form)

    async def download_object(self, request: Request) -> Response:
        """GET …/object?key=KEY: the object as an attachment, streamed from disk."""
        caller = await self._authenticate(request)
        objects = self._enabled()
        download = await objects.get_object(caller, request.path_params["bucket"], _key(request))
        return _DownloadResponse(download)

    async def delete_object(self, request: Request) -> Response:
        """DELETE …/object?key=KEY."""
        caller = await self._authenticate(request)
        objects = self._enabled()
        bucket, key = request.path_params["bucket"], _key(request)
        await objects.delete_object(caller, bucket, key)
        return JSONResponse({"bucket": bucket, "key": key, "result": "deleted"})

    def _enabled(self) -> ObjectBrowser:
        if self._objects is None:
            raise NotFound(
                f"Buckets are not available: {NOT_ENABLED}.",
                fix="run the control plane with `aifactory up`, which serves object storage",
            )
        return self._objects


class _DownloadResponse(StreamingResponse):
    """Streams an open object and closes it, even when the client goes away mid-way."""

    def __init__(self, download: Download) -> None:
        self._download = download
        name = download.key.rpartition("/")[2]
        fallback = "".join(
            c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
        )
        super().__init__(
            download.chunks(),
            media_type=download.content_type,
            headers={
                "Content-Length": str(download.size),
                "Content-Disposition": (
                    f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
                ),
                "ETag": download.etag,
                "Last-Modified": formatdate(download.modified, usegmt=True),
                # Whatever type the uploader claimed, the browser must not render it here.
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox",
                "Cache-Control": "no-store",
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._download.aclose()


def _key(request: Request) -> str:
    key = request.query_params.get("key", "")
    if not key:
        raise BadRequest("Say which object: add ?key=KEY to the URL.", param="key")
    return key


def _limit(text: str) -> int:
    if text == "":
        return DEFAULT_PAGE
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest("`limit` must be a whole number.", param="limit") from exc
    if not 1 <= value <= MAX_PAGE:
        raise BadRequest(f"`limit` must be between 1 and {MAX_PAGE}.", param="limit")
    return value
