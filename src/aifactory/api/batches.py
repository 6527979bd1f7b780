"""The OpenAI Files and Batches API, under ``/v1/files`` and ``/v1/batches``.

Any valid key may call them; everything is scoped to the key's tenant, so
another tenant's file or batch answers 404 as if it did not exist. Errors
are OpenAI's error JSON (the app's ``APIError`` handler).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aifactory.batches import BatchFiles, BatchService, Download, file_view
from aifactory.catalog import CatalogUses, Use
from aifactory.errors import BadRequest
from aifactory.input_limits import parse_json_object
from aifactory.tenancy import Principal

Authenticate = Callable[[Request], Awaitable[Principal]]

_MAX_PAGE = 10_000
_SIDES = ("inputs", "outputs")


class BatchesAPI:
    """Routes of the Files API (purpose ``batch``) and the Batches API.

    Args:
        files: The tenants' batch files.
        batches: The batches facade.
        authenticate: Checks the request's key; raises ``Unauthorized`` otherwise.
        uses: Resolves the catalog entries a batch's ``metadata.catalog_inputs``
            and ``metadata.catalog_outputs`` name (space-separated), and records them.
    """

    def __init__(
        self,
        files: BatchFiles,
        batches: BatchService,
        authenticate: Authenticate,
        uses: CatalogUses | None = None,
    ) -> None:
        self._uses = uses
        self._files = files
        self._batches = batches
        self._auth = authenticate

    def routes(self) -> list[Route]:
        """Every route of the two APIs."""
        return [
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files", self.list_files, methods=["GET"]),
            Route("/v1/files/{file_id}", self.file, methods=["GET"]),
            Route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", self.content, methods=["GET"]),
            Route("/v1/batches", self.create, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
        ]

    async def upload(self, request: Request) -> Response:
        """POST /v1/files (multipart: ``file``, ``purpose``)."""
        caller = await self._auth(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest("Send the file as multipart/form-data with `file` and `purpose`.")
        async with request.form(max_files=1, max_fields=8) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise BadRequest("`file` is required (a file part).", param="file")
            if not isinstance(purpose, str):
                raise BadRequest("`purpose` is required.", param="purpose")
            data = await upload.read(self._files.max_bytes + 1)
            row = await self._files.upload(caller, upload.filename or "", purpose, data)
        return JSONResponse(file_view(row))

    async def list_files(self, request: Request) -> Response:
        """GET /v1/files?purpose=&limit=: the tenant's files, newest first."""
        caller = await self._auth(request)
        limit = _limit(request, 10_000)
        rows = await self._files.files(caller, request.query_params.get("purpose", ""), limit)
        return JSONResponse(
            {"object": "list", "data": [file_view(r) for r in rows], "has_more": False}
        )

    async def file(self, request: Request) -> Response:
        """GET /v1/files/{id}."""
        caller = await self._auth(request)
        return JSONResponse(
            file_view(await self._files.get(caller, request.path_params["file_id"]))
        )

    async def delete_file(self, request: Request) -> Response:
        """DELETE /v1/files/{id}: the object and its record."""
        caller = await self._auth(request)
        file_id = request.path_params["file_id"]
        await self._files.delete(caller, file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    async def content(self, request: Request) -> Response:
        """GET /v1/files/{id}/content: the file's bytes."""
        caller = await self._auth(request)
        download = await self._files.content(caller, request.path_params["file_id"])
        return _Content(download)

    async def create(self, request: Request) -> Response:
        """POST /v1/batches."""
        caller = await self._auth(request)
        body = parse_json_object(await request.body())
        metadata = body.get("metadata")
        declared: list[Use] = []
        if self._uses is not None and isinstance(metadata, dict):
            inputs, outputs = (str(metadata.get(f"catalog_{side}", "")).split() for side in _SIDES)
            declared = await self._uses.declared(caller, inputs, outputs, "metadata")
        batch = await self._batches.create(caller, body)
        if self._uses is not None:
            await self._uses.record(declared, "batch", batch["id"], caller.tenant_id)
        return JSONResponse(batch)

    async def list_batches(self, request: Request) -> Response:
        """GET /v1/batches?after=&limit=."""
        caller = await self._auth(request)
        limit = _limit(request, 20)
        after = request.query_params.get("after", "")
        return JSONResponse(await self._batches.list(caller, after, limit))

    async def batch(self, request: Request) -> Response:
        """GET /v1/batches/{id}: status, counts, progress."""
        caller = await self._auth(request)
        return JSONResponse(await self._batches.get(caller, request.path_params["batch_id"]))

    async def cancel(self, request: Request) -> Response:
        """POST /v1/batches/{id}/cancel."""
        caller = await self._auth(request)
        return JSONResponse(await self._batches.cancel(caller, request.path_params["batch_id"]))


class _Content(StreamingResponse):
    """Streams an open file and closes it, even when the client goes away mid-way."""

    def __init__(self, download: Download) -> None:
        self._download = download
        super().__init__(
            download.chunks(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(download.size)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._download.aclose()


def _limit(request: Request, default: int) -> int:
    text = request.query_params.get("limit", "")
    if text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= _MAX_PAGE:
        raise BadRequest(f"`limit` must be a whole number from 1 to {_MAX_PAGE}.", param="limit")
    return int(text)
