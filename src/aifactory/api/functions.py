"""Serverless functions over HTTP: named functions, calls and pool status.

``/v1/functions…`` takes any valid key, inference-only ones included (calls
are scoped to the caller's tenant and its key's services). Deploying and
removing named functions under ``/api/functions`` takes a member key (or
above) of the pool's tenant, or an admin key acting on its behalf; a
function is callable by other tenants only when deployed ``shared``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aifactory.api.access import Access
from aifactory.api.routes import read_json_object
from aifactory.api.visibility import ServiceVisibility
from aifactory.catalog import CatalogUses, Use
from aifactory.control import ControlPlane
from aifactory.errors import BadRequest, NotFound
from aifactory.functions import FunctionsHub, Invoker
from aifactory.tenancy import Action, Principal, record_action

__all__ = ["FunctionsAPI"]

_FAILED_STATUS = {"failed": 500, "lost": 502, "timed_out": 504}


class FunctionsAPI:
    """Routes of named functions, their calls and the function pools.

    Args:
        invoker: Runs named functions.
        hub: The broker, for pool counters and its client address.
        plane: Pool replicas, queue and scaling, as for services.
        access: Checks each request's key and role.
        uses: Checks a call's declared catalog ``inputs`` and ``outputs`` and
            records them as the call's lineage.
    """

    def __init__(
        self,
        invoker: Invoker,
        hub: FunctionsHub,
        plane: ControlPlane,
        access: Access,
        uses: CatalogUses | None = None,
    ) -> None:
        self._uses = uses
        self._invoker = invoker
        self._hub = hub
        self._plane = plane
        self._access = access
        self._visibility = ServiceVisibility(plane.store)

    def routes(self) -> list[Route]:
        """Every route of the functions API."""
        return [
            Route("/v1/functions", self.list_functions, methods=["GET"]),
            Route("/v1/functions/pools", self.list_pools, methods=["GET"]),
            Route("/v1/functions/pools/{name}", self.pool, methods=["GET"]),
            Route("/v1/functions/calls", self.list_calls, methods=["GET"]),
            Route("/v1/functions/calls/{call_id}", self.call, methods=["GET"]),
            Route("/v1/functions/{name}/invoke", self.invoke, methods=["POST"]),
            Route("/api/functions", self.deploy, methods=["POST"]),
            Route("/api/functions/{name}", self.remove, methods=["DELETE"]),
        ]

    async def list_functions(self, request: Request) -> Response:
        """GET /v1/functions: every named function."""
        caller = await self._access.allowed(request, Action.INFER)
        return JSONResponse({"functions": await self._invoker.functions(caller)})

    async def invoke(self, request: Request) -> Response:
        """POST /v1/functions/{name}/invoke[?async=true] with ``{"args", "kwargs"}``.

        ``inputs`` and ``outputs`` (``catalog:TENANT/NAME[@VERSION]`` lists)
        declare the catalog entries the call reads and writes: checked as a
        job's are, and recorded as the call's lineage.
        Synchronous: 200 with the result, or the call's error with 500 (the
        function raised), 502 (its worker was lost) or 504 (it timed out).
        Asynchronous: 202 with the call id.
        """
        caller = await self._access.allowed(request, Action.INFER)
        wait = request.query_params.get("async", "false").lower() not in ("true", "1")
        document = await read_json_object(request) if (await request.body()).strip() else {}
        uses = await self._declared(caller, document)
        call = await self._invoker.invoke(request.path_params["name"], document, caller, wait)
        if self._uses is not None and uses:
            await self._uses.record(uses, "function", call["id"], caller.tenant_id)
        if not wait:
            return JSONResponse(call, status_code=202)
        return JSONResponse(call, status_code=_FAILED_STATUS.get(call["status"], 200))

    async def _declared(self, caller: Principal, document: dict[str, Any]) -> list[Use]:
        """The catalog entries a call declares (taken out of ``document``)."""
        inputs, outputs = document.pop("inputs", []), document.pop("outputs", [])
        for field, texts in (("inputs", inputs), ("outputs", outputs)):
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise BadRequest(
                    f"{field} must be a list of catalog:TENANT/NAME[@VERSION] references.",
                    param=field,
                )
        if self._uses is None or not (inputs or outputs):
            return []
        return await self._uses.declared(caller, inputs, outputs, "inputs")

    async def call(self, request: Request) -> Response:
        """GET /v1/functions/calls/{id}: a call's status and, once done, its outcome."""
        caller = await self._access.allowed(request, Action.INFER)
        return JSONResponse(await self._invoker.call(request.path_params["call_id"], caller))

    async def list_calls(self, request: Request) -> Response:
        """GET /v1/functions/calls?function=NAME&limit=N: recent calls, newest first."""
        caller = await self._access.allowed(request, Action.INFER)
        function = request.query_params.get("function", "")
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "50"))))
        except ValueError as exc:
            raise BadRequest("`limit` must be a whole number.", param="limit") from exc
        return JSONResponse({"calls": await self._invoker.calls(function, caller, limit)})

    async def list_pools(self, request: Request) -> Response:
        """GET /v1/functions/pools: the caller's tenant's pools (an admin's: every pool)."""
        caller = await self._access.allowed(request, Action.INFER)
        services = await self._visibility.views(caller, await self._plane.services())
        pools = [s["name"] for s in services if s["kind"] == "FunctionPool"]
        return JSONResponse({"pools": [await self._pool_status(name) for name in pools]})

    async def pool(self, request: Request) -> Response:
        """GET /v1/functions/pools/{name}: one pool, with its broker address and key."""
        caller = await self._access.allowed(request, Action.INFER)
        name = request.path_params["name"]
        await self._visibility.owned(caller, name, _no_pool(name))
        return JSONResponse(await self._pool_status(name))

    async def _pool_status(self, name: str) -> dict[str, Any]:
        try:
            status = await self._plane.status(name)
        except NotFound:
            status = {}
        if status.get("kind") != "FunctionPool":
            raise _no_pool(name)
        counts = self._hub.stats().pools.get(name, {})
        status["workers"] = {
            "connected": counts.get("workers", 0),
            "slots": counts.get("capacity", 0),
            "running": counts.get("running", 0),
        }
        status["broker"] = self._hub.client_address
        status["broker_key"] = self._hub.public_key  # Curve: the executor pins it
        return status

    async def deploy(self, request: Request) -> Response:
        """POST /api/functions ``{"name", "target": "module:function", "pool", ...}``.

        Optional ``timeout_s`` (default 300) and ``shared``: ``true`` lets
        other tenants call it; deploying it again with another ``shared``
        changes only that.
        """
        principal = await self._access.allowed(request, Action.DEPLOY)
        document = await read_json_object(request)
        name, target, pool = (document.get(k) for k in ("name", "target", "pool"))
        timeout_s = document.get("timeout_s", 300.0)
        shared = document.get("shared", False)
        for field, value in (("name", name), ("target", target), ("pool", pool)):
            if not isinstance(value, str):
                raise BadRequest(f"`{field}` must be a string.", param=field)
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool):
            raise BadRequest("`timeout_s` must be a number of seconds.", param="timeout_s")
        if not isinstance(shared, bool):
            raise BadRequest("`shared` must be true or false.", param="shared")
        assert isinstance(name, str) and isinstance(target, str) and isinstance(pool, str)
        view = await self._invoker.deploy(name, target, pool, float(timeout_s), shared, principal)
        if view["result"] != "unchanged":  # created, shared or unshared
            action = "function.deployed" if view["result"] == "created" else "function.sharing"
            await record_action(
                self._plane.store, principal, action, name, pool=pool, shared=shared
            )
        return JSONResponse(view, status_code=201 if view["result"] == "created" else 200)

    async def remove(self, request: Request) -> Response:
        """DELETE /api/functions/{name}."""
        principal = await self._access.allowed(request, Action.DEPLOY)
        await self._invoker.remove(request.path_params["name"], principal)
        await record_action(
            self._plane.store, principal, "function.removed", request.path_params["name"]
        )
        return JSONResponse({"name": request.path_params["name"], "result": "removed"})


def _no_pool(name: str) -> NotFound:
    return NotFound(
        f"function pool {name!r} does not exist.", fix="see `aifactory functions pools`"
    )
