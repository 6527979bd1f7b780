"""The admin and replica-registration API (Starlette), under ``/api`` and ``/internal``.

Endpoints raise our errors; the handler in ``build_api`` turns them into the
same JSON error shape the gateway uses.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aifactory import metrics
from aifactory.api.visibility import ServiceVisibility
from aifactory.control import ControlPlane
from aifactory.errors import BadRequest, Forbidden, NotFound, SpecError, Unauthorized
from aifactory.input_limits import parse_json_object
from aifactory.specs import load_deployable, parse_duration_s
from aifactory.tenancy import KeyAuthenticator, Principal, issue_key, load_s3_master, record_action

_MAX_SPEC_BYTES = 256 * 1024


class AdminAPI:
    """Routes that manage services and keys."""

    def __init__(self, plane: ControlPlane, authenticator: KeyAuthenticator) -> None:
        self._plane = plane
        self._auth = authenticator
        self._visibility = ServiceVisibility(plane.store)

    def routes(self) -> list[Route]:
        """Every route of the admin API."""
        return [
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/api/services", self.list_services, methods=["GET"]),
            Route("/api/services", self.deploy, methods=["POST"]),
            Route("/api/services/{name}", self.describe, methods=["GET"]),
            Route("/api/services/{name}", self.delete, methods=["DELETE"]),
            Route("/api/services/{name}/replicas", self.replicas, methods=["GET"]),
            Route("/api/services/{name}/logs", self.logs, methods=["GET"]),
            Route("/api/services/{name}/job-script", self.job_script, methods=["GET"]),
            Route("/api/keys", self.list_keys, methods=["GET"]),
            Route("/api/keys", self.create_key, methods=["POST"]),
            Route("/api/keys/{key_id:int}", self.revoke_key, methods=["DELETE"]),
            Route("/v1/services/{name}", self.service_status, methods=["GET"]),
            Route("/internal/replicas/{replica_id}/register", self.register, methods=["POST"]),
            Route("/internal/replicas/{replica_id}/preempted", self.preempted, methods=["POST"]),
        ]

    async def authenticate(self, request: Request) -> Principal:
        """The caller's principal; raises unless the request carries a valid key."""
        return await self._caller(request)

    async def authenticate_admin(self, request: Request) -> Principal:
        """The caller's principal; raises unless the request carries an admin key."""
        return await self._admin(request)

    async def _caller(self, request: Request) -> Principal:
        return await self._auth.authenticate_header(request.headers.get("authorization", ""))

    async def service_status(self, request: Request) -> Response:
        """GET /v1/services/{name}: replicas, queue, pending reasons and scaling.

        In full for the service's tenant (and admins); another tenant's public
        service by name and models only, a private one not at all.
        """
        caller = await self._caller(request)
        name = request.path_params["name"]
        status = await self._plane.status(name)
        return JSONResponse(await self._visibility.view(caller, name, status))

    async def _admin(self, request: Request) -> Principal:
        principal = await self._caller(request)
        if not principal.is_admin:
            raise Forbidden(
                "This endpoint needs an admin key.", fix="use the key in DATA_DIR/admin.key"
            )
        return principal

    async def prometheus(self, request: Request) -> Response:
        """GET /metrics: Prometheus text, for admin keys only (it names every model)."""
        await self._admin(request)
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def list_services(self, request: Request) -> Response:
        """GET /api/services: every service for an admin key; for a tenant's, what it may see."""
        caller = await self._caller(request)
        return JSONResponse(
            {
                "services": await self._visibility.views(caller, await self._plane.services()),
                # root | prefix | single-user: how workloads become their tenant.
                "isolation": self._plane.settings.privilege.mode,
            }
        )

    async def deploy(self, request: Request) -> Response:
        """POST /api/services[?tenant=NAME] with a YAML or JSON spec.

        The service runs for ``tenant`` (its Slurm account, budgets and, when
        private, its keys only); by default for the admin's own tenant. The
        same name again with a changed spec rolls the service out to it.
        """
        principal = await self._admin(request)
        tenant_id = principal.tenant_id
        if "tenant" in request.query_params:
            owner = await _run(self._plane.store.tenant, request.query_params["tenant"])
            if owner is None:
                raise NotFound(
                    f"tenant {request.query_params['tenant']!r} does not exist.",
                    fix="create it with `aifactory tenants create NAME`",
                    param="tenant",
                )
            tenant_id = owner.id
        body = await request.body()
        if len(body) > _MAX_SPEC_BYTES:
            raise BadRequest(f"The spec is larger than {_MAX_SPEC_BYTES} bytes.")
        origin = request.headers.get("x-spec-origin", "spec")[:200]
        try:
            service = await _run(load_deployable, body.decode("utf-8", errors="replace"), origin)
        except SpecError as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        outcome = await self._plane.deploy(service, tenant_id)
        if outcome != "unchanged":
            action = "service.deployed" if outcome == "created" else "service.updated"
            await record_action(
                self._plane.store, principal, action, service.name, tenant_id=tenant_id
            )
        status = 201 if outcome == "created" else 200
        return JSONResponse({"name": service.name, "result": outcome}, status_code=status)

    async def describe(self, request: Request) -> Response:
        """GET /api/services/{name}: spec and replicas (as ``/v1/services/{name}`` is scoped)."""
        caller = await self._caller(request)
        name = request.path_params["name"]
        described = await self._plane.describe(name)
        return JSONResponse(await self._visibility.view(caller, name, described))

    async def delete(self, request: Request) -> Response:
        """DELETE /api/services/{name}: replicas drain, then the service goes."""
        principal = await self._admin(request)
        await self._plane.delete(request.path_params["name"])
        await record_action(
            self._plane.store, principal, "service.deleted", request.path_params["name"]
        )
        return JSONResponse({"name": request.path_params["name"], "result": "deleting"}, 202)

    async def replicas(self, request: Request) -> Response:
        """GET /api/services/{name}/replicas, for its tenant's keys and admins."""
        name = request.path_params["name"]
        await self._visibility.owned(await self._caller(request), name, _no_service(name))
        await self._plane.describe(name)
        return JSONResponse({"replicas": await self._plane.replicas(name)})

    async def logs(self, request: Request) -> Response:
        """GET /api/services/{name}/logs?replica=ID&lines=N."""
        await self._admin(request)
        try:
            lines = min(10_000, max(1, int(request.query_params.get("lines", "200"))))
        except ValueError as exc:
            raise BadRequest("`lines` must be a whole number.", param="lines") from exc
        text = await self._plane.logs(
            request.path_params["name"], request.query_params.get("replica", ""), lines
        )
        return PlainTextResponse(text)

    async def job_script(self, request: Request) -> Response:
        """GET /api/services/{name}/job-script: what a new replica would run."""
        await self._admin(request)
        return PlainTextResponse(await self._plane.job_script(request.path_params["name"]))

    async def list_keys(self, request: Request) -> Response:
        """GET /api/keys (hashes are never shown)."""
        await self._admin(request)
        keys = await _run(self._plane.store.list_keys)
        return JSONResponse({"keys": keys})

    async def create_key(self, request: Request) -> Response:
        """POST /api/keys {"tenant", "role": "user"|"admin", "name", "expires_in": "30d"}."""
        principal = await self._admin(request)
        document = await read_json_object(request)
        tenant = document.get("tenant")
        role = document.get("role", "user")
        label = document.get("name", "")
        if not isinstance(tenant, str) or not _is_name(tenant):
            raise BadRequest(
                f"tenant {tenant!r} is not a valid name.",
                fix="use lower case letters, digits and '-', starting with a letter",
                param="tenant",
            )
        if role not in ("user", "admin"):
            raise BadRequest(f"role {role!r} is not 'user' or 'admin'.", param="role")
        if not isinstance(label, str) or len(label) > 64:
            raise BadRequest("`name` must be a string of at most 64 characters.", param="name")
        expires_at = _expiry(document.get("expires_in"))
        master = await _run(load_s3_master, self._plane.settings.objects_master_key_file)
        issued = await _run(issue_key, self._plane.store, tenant, role, label, expires_at, master)
        await record_action(
            self._plane.store,
            principal,
            "key.created",
            f"{tenant} key {issued.key_id}",
            role=role,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
        return JSONResponse(
            {
                "id": issued.key_id,
                "tenant": issued.tenant,
                "role": issued.role,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "key": issued.secret,
                "s3_access_key_id": issued.s3_access_key_id,
                "s3_secret_access_key": issued.s3_secret_access_key,
            },
            status_code=201,
        )

    async def revoke_key(self, request: Request) -> Response:
        """DELETE /api/keys/{id}."""
        principal = await self._admin(request)
        key_id = request.path_params["key_id"]
        if not await _run(self._plane.store.revoke_key, key_id):
            raise NotFound(f"no active key with id {key_id}.", fix="see `aifactory keys ls`")
        await record_action(self._plane.store, principal, "key.revoked", f"key {key_id}")
        return JSONResponse({"id": key_id, "result": "revoked"})

    async def register(self, request: Request) -> Response:
        """POST /internal/replicas/{id}/register, authenticated by the one-time token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Registration needs the replica's one-time token.")
        document = await read_json_object(request)
        await self._plane.register(
            request.path_params["replica_id"],
            token.strip(),
            document.get("host"),
            document.get("port"),
            document.get("launched_at"),
        )
        return JSONResponse({"result": "registered"})

    async def preempted(self, request: Request) -> Response:
        """POST /internal/replicas/{id}/preempted, authenticated by the replica's drain token.

        The replica drains at once; the answer says how many requests are
        still in flight on it (the launcher asks again until none are).
        """
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Preemption needs the replica's drain token.")
        in_flight = await self._plane.preempted(request.path_params["replica_id"], token.strip())
        return JSONResponse({"result": "draining", "in_flight": in_flight})


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object, or a 400 that says what is wrong."""
    return parse_json_object(await request.body())


def _no_service(name: str) -> NotFound:
    return NotFound(f"service {name!r} does not exist.", fix="see `aifactory services`")


def _expiry(expires_in: Any) -> datetime | None:
    if expires_in is None:
        return None
    try:
        seconds = parse_duration_s(expires_in)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"expires_in: {exc}", param="expires_in") from exc
    if seconds <= 0:
        raise BadRequest("expires_in must be positive.", param="expires_in")
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _is_name(value: str) -> bool:
    return re.fullmatch(r"[a-z][a-z0-9-]{0,62}", value) is not None


async def _run(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)
