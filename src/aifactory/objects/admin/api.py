"""Admin routes for buckets and the dashboard's status, under ``/api`` of the control plane.

::

    GET    /api/buckets                      every bucket, owner and grants
    POST   /api/buckets  {name, tenant}      create a bucket for a tenant
    DELETE /api/buckets/{name}               delete an empty bucket
    PUT    /api/buckets/{name}/grants  {tenant, access: read|write|null}
    GET    /api/objects/status               endpoint, disk space, request counters
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aifactory.errors import BadRequest, ConfigError, Conflict, NotFound
from aifactory.input_limits import parse_json_object
from aifactory.objects.s3.access import ACCESS_LEVELS
from aifactory.objects.service import ObjectsService
from aifactory.tenancy import Principal


class BucketsAPI:
    """Routes that manage buckets (admin keys only).

    Args:
        service: The object storage service.
        authenticate_admin: Raises unless the request carries an admin key.
    """

    def __init__(
        self,
        service: ObjectsService,
        authenticate_admin: Callable[[Request], Awaitable[Principal]],
    ) -> None:
        self._service = service
        self._admin = authenticate_admin

    def routes(self) -> list[Route]:
        """Every route of the buckets API."""
        return [
            Route("/api/buckets", self.list, methods=["GET"]),
            Route("/api/buckets", self.create, methods=["POST"]),
            Route("/api/buckets/{name}", self.delete, methods=["DELETE"]),
            Route("/api/buckets/{name}/grants", self.grant, methods=["PUT"]),
            Route("/api/objects/status", self.status, methods=["GET"]),
        ]

    async def list(self, request: Request) -> Response:
        """GET /api/buckets (directories without an owner show tenant null)."""
        await self._admin(request)
        assert self._service.files is not None
        records = {r.name: r for r in await asyncio.to_thread(self._service.store.buckets)}
        on_disk = await asyncio.to_thread(self._service.files.bucket_names)
        rows = []
        for name, created in on_disk:
            record = records.get(name)
            rows.append(
                {
                    "name": name,
                    "tenant": record.tenant if record else None,
                    "grants": record.grants if record else {},
                    "created_at": record.created_at.isoformat() if record else created,
                }
            )
        return JSONResponse({"buckets": rows})

    async def create(self, request: Request) -> Response:
        """POST /api/buckets {"name": NAME, "tenant": TENANT}."""
        await self._admin(request)
        document = await _json_object(request)
        name, tenant = document.get("name"), document.get("tenant")
        if not isinstance(name, str) or not isinstance(tenant, str) or not tenant:
            raise BadRequest('Send {"name": BUCKET, "tenant": TENANT}.')
        assert self._service.registry is not None
        tenant_id = await asyncio.to_thread(self._service.store.ensure_tenant, tenant)
        await self._service.registry.create_for(tenant_id, name)
        return JSONResponse({"name": name, "tenant": tenant}, status_code=201)

    async def delete(self, request: Request) -> Response:
        """DELETE /api/buckets/{name}: only an empty bucket."""
        await self._admin(request)
        assert self._service.registry is not None and self._service.files is not None
        name = request.path_params["name"]
        if not await asyncio.to_thread(self._service.files.bucket_exists, name):
            raise NotFound(f"no bucket {name!r}.", fix="see `aifactory buckets ls`")
        await self._service.registry.remove(name)
        return JSONResponse({"name": name, "result": "deleted"})

    async def grant(self, request: Request) -> Response:
        """PUT /api/buckets/{name}/grants {"tenant": T, "access": "read"|"write"|null}."""
        await self._admin(request)
        assert self._service.registry is not None and self._service.sharing is not None
        name = request.path_params["name"]
        document = await _json_object(request)
        tenant, access = document.get("tenant"), document.get("access")
        if not isinstance(tenant, str) or (access is not None and access not in ACCESS_LEVELS):
            raise BadRequest(
                'Send {"tenant": T, "access": "read" | "write" | null}.', param="access"
            )
        try:
            found = await asyncio.to_thread(self._service.sharing.set, name, tenant, access)
        except ConfigError as exc:
            self._service.registry.forget(name)
            raise Conflict(exc.message, exc.fix) from exc
        if not found:
            raise NotFound(
                f"no bucket {name!r} with an owner.",
                fix="create it with `aifactory buckets create`",
            )
        self._service.registry.forget(name)
        return JSONResponse({"name": name, "tenant": tenant, "access": access})

    async def status(self, request: Request) -> Response:
        """GET /api/objects/status."""
        await self._admin(request)
        return JSONResponse(await asyncio.to_thread(self._service.status))


async def _json_object(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())
