"""The data catalog over HTTP: register, read, search, DCAT-AP, and a version's files.

Registering needs a key that may deploy; reading needs one that may read,
except public entries, which anyone reads without a key. An entry the
caller may not see answers 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from aifactory.api.access import Access
from aifactory.api.routes import read_json_object
from aifactory.catalog import (
    Catalog,
    CatalogView,
    Lineage,
    SearchQuery,
    catalog_graph,
    croissant,
    entry_graph,
    jsonld,
)
from aifactory.errors import BadRequest
from aifactory.tenancy import Action, Principal

__all__ = ["CatalogAPI"]

_JSONLD = "application/ld+json"
_MAX_PARTS = 10_000
_FACETS = ("format", "license", "tenant", "keyword", "kind")


class CatalogAPI:
    """Routes of the data catalog.

    Args:
        catalog: Entries and their versions.
        access: Checks each request's key and role.
        lineage: What produced each entry and what used it.
    """

    def __init__(self, catalog: Catalog, access: Access, lineage: Lineage) -> None:
        self._catalog = catalog
        self._access = access
        self._lineage = lineage

    def routes(self) -> list[Route]:
        """Every route of this API."""
        entry = "/api/catalog/{tenant}/{name}"
        version = entry + "/versions/{version:int}"
        return [
            Route("/api/catalog", self.register, methods=["POST"]),
            Route("/api/catalog", self.search, methods=["GET"]),
            Route("/api/catalog.jsonld", self.dcat_catalog, methods=["GET"]),
            Route(entry, self.show, methods=["GET"]),
            Route(entry, self.delete, methods=["DELETE"]),
            Route(entry + "/dcat.jsonld", self.dcat_entry, methods=["GET"]),
            Route(entry + "/croissant.json", self.croissant, methods=["GET"]),
            Route(entry + "/lineage", self.lineage, methods=["GET"]),
            Route(version, self.show, methods=["GET"]),
            Route(version + "/dcat.jsonld", self.dcat_entry, methods=["GET"]),
            Route(version + "/croissant.json", self.croissant, methods=["GET"]),
            Route(version + "/files/{path:path}", self.download, methods=["GET"]),
            Route(version + "/partitions", self.partitions, methods=["GET"]),
        ]

    async def _reader(self, request: Request) -> Principal | None:
        """The caller, or None for a request without a key (it sees public entries)."""
        if not request.headers.get("authorization"):
            return None
        return await self._access.allowed(request, Action.READ)

    async def _view(self, request: Request) -> CatalogView:
        params = request.path_params
        return await self._catalog.view(
            await self._reader(request), params["tenant"], params["name"], params.get("version")
        )

    async def register(self, request: Request) -> Response:
        """``POST /api/catalog``: register a prefix as an entry (a new version if it changed)."""
        caller = await self._access.allowed(request, Action.DEPLOY)
        view = await self._catalog.register(caller, await read_json_object(request))
        return JSONResponse(await self._document(view, caller), status_code=201)

    async def delete(self, request: Request) -> Response:
        """``DELETE`` an entry: its versions and lineage go, and the bytes only they kept."""
        caller = await self._access.allowed(request, Action.DEPLOY)
        params = request.path_params
        return JSONResponse(await self._catalog.delete(caller, params["tenant"], params["name"]))

    async def show(self, request: Request) -> Response:
        """``GET`` an entry (its latest version, or the one named) with its version list."""
        view = await self._view(request)
        return JSONResponse(await self._document(view, await self._reader(request)))

    async def search(self, request: Request) -> Response:
        """``GET /api/catalog?q=&format=&license=&tenant=&keyword=&kind=``: matches and facets."""
        params = request.query_params
        query = SearchQuery(params.get("q", ""), **{f: params.get(f, "") for f in _FACETS})
        caller = await self._reader(request)
        views = await self._catalog.search(caller, query)
        return JSONResponse(
            {
                "entries": [_summary(view) for view in views],
                "facets": _facets(views),
            }
        )

    async def lineage(self, request: Request) -> Response:
        """``GET .../lineage``: the jobs, batches, services and keys that made or used it."""
        params = request.path_params
        shown = await self._lineage.show(
            await self._reader(request), params["tenant"], params["name"]
        )
        return JSONResponse(shown)

    async def dcat_entry(self, request: Request) -> Response:
        """An entry version as DCAT-AP JSON-LD."""
        view = await self._view(request)
        graph = entry_graph(view, _base_url(request))
        return Response(jsonld(graph), media_type=_JSONLD)

    async def croissant(self, request: Request) -> Response:
        """A dataset version as Croissant JSON-LD (built by mlcroissant)."""
        view = await self._view(request)
        document = await asyncio.to_thread(croissant, view, _base_url(request))
        return JSONResponse(document, media_type=_JSONLD)

    async def dcat_catalog(self, request: Request) -> Response:
        """Every entry the caller may see (latest versions) as a DCAT-AP catalog."""
        views = await self._catalog.search(await self._reader(request), SearchQuery())
        graph = catalog_graph(views, _base_url(request), "aifactory data catalog")
        return Response(jsonld(graph), media_type=_JSONLD)

    async def download(self, request: Request) -> Response:
        """A file of a version, exactly as registered (410 when its bytes are gone)."""
        view = await self._view(request)
        path = request.path_params["path"]
        if not path:
            raise BadRequest("name a file of the version.")
        found = await self._catalog.file(view, path)
        return FileResponse(found, filename=path.rsplit("/", 1)[-1])

    async def partitions(self, request: Request) -> Response:
        """``GET .../partitions?n=``: record-aligned byte ranges (or row groups) of the files."""
        raw = request.query_params.get("n", "1")
        if not raw.isdigit() or not 1 <= int(raw) <= _MAX_PARTS:
            raise BadRequest(f"n must be a whole number from 1 to {_MAX_PARTS}.", param="n")
        view = await self._view(request)
        parts = await self._catalog.partitions(view, int(raw))
        return JSONResponse({"partitions": [asdict(part) for part in parts]})

    async def _document(self, view: CatalogView, reader: Principal | None) -> dict[str, Any]:
        document = _summary(view)
        document["files"] = view.version.files
        document["versions"] = await self._catalog.versions(view)
        owner = reader is not None and (reader.is_admin or reader.tenant_id == view.entry.tenant_id)
        if owner:
            document["shared_with"] = list(view.entry.shared_with)
        return document


def _summary(view: CatalogView) -> dict[str, Any]:
    entry = view.entry
    return {
        "id": f"{entry.tenant}/{entry.name}",
        "tenant": entry.tenant,
        "name": entry.name,
        "kind": entry.kind,
        "bucket": entry.bucket,
        "prefix": entry.prefix,
        "visibility": entry.visibility,
        "version": view.version.version,
        "latest": entry.latest,
        "created_at": view.version.created_at.isoformat(),
        "bytes": sum(int(f["size"]) for f in view.version.files),
        **view.version.description,
    }


def _facets(views: list[CatalogView]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {f: {} for f in _FACETS}
    for view in views:
        words = view.version.description
        values = {
            "format": [words.get("format", "")],
            "license": [words.get("license", "")],
            "tenant": [view.entry.tenant],
            "keyword": list(words.get("keywords", [])),
            "kind": [view.entry.kind],
        }
        for facet, found in values.items():
            for value in found:
                if value:
                    counts[facet][value] = counts[facet].get(value, 0) + 1
    return counts


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
