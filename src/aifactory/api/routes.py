"""The admin and replica-registration API (Starlette), under ``/api`` and ``/internal``.

Endpoints raise our errors; the handler in ``build_api`` turns them into the
same JSON error shape the gateway uses.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aifactory import metrics
from aifactory.api.access import Access
from aifactory.api.visibility import ServiceVisibility
from aifactory.catalog import CatalogUses, Use
from aifactory.control import ControlPlane
from aifactory.errors import BadRequest, Forbidden, NotFound, SpecError, Unauthorized
from aifactory.input_limits import parse_json_object
from aifactory.specs import Service, SpecPolicy, load_deployable, parse_duration_s
from aifactory.tenancy import (
    ROLES,
    Action,
    KeyScope,
    Principal,
    Quotas,
    issue_key,
    load_s3_master,
    may_mint,
    record_action,
)

_MAX_SPEC_BYTES = 256 * 1024
# Service and bucket names: both fit this (bucket names are 3-63 of these).
_SCOPE_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")


class AdminAPI:
    """Routes that manage services and keys.

    Args:
        plane: The control plane.
        access: Checks each request's key and role.
        quotas: The tenants' quotas, checked when a tenant deploys.
        policy: What tenants may set in the specs they deploy.
        uses: Resolves a ``catalog:`` model for the deployer (and records its lineage).
    """

    def __init__(
        self,
        plane: ControlPlane,
        access: Access,
        quotas: Quotas,
        policy: SpecPolicy,
        uses: CatalogUses | None = None,
    ) -> None:
        self._uses = uses
        self._plane = plane
        self._access = access
        self._quotas = quotas
        self._policy = policy
        self._visibility = ServiceVisibility(plane.store)

    def routes(self) -> list[Route]:
        """Every route of the admin API."""
        return [
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/api/metrics", self.tenant_metrics, methods=["GET"]),
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

    async def service_status(self, request: Request) -> Response:
        """GET /v1/services/{name}: replicas, queue, pending reasons and scaling.

        In full for the service's tenant (and admins); another tenant's public
        service by name and models only, a private one not at all.
        """
        caller = await self._access.allowed(request, Action.READ)
        name = request.path_params["name"]
        status = await self._plane.status(name)
        return JSONResponse(await self._visibility.view(caller, name, status))

    async def prometheus(self, request: Request) -> Response:
        """GET /metrics: Prometheus text, for admin keys only (it names every model)."""
        await self._access.allowed(request, Action.SITE)
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def tenant_metrics(self, request: Request) -> Response:
        """GET /api/metrics: the Prometheus series of the caller's own services and models."""
        caller = await self._access.allowed(request, Action.READ)
        owned = await self._visibility.owned_names(caller)
        if owned is None:
            return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)
        names = set(owned)
        for summary in await self._plane.services():
            if summary["name"] in owned:
                names.update(summary.get("models", ()))
        return Response(metrics.render_for(names), media_type=metrics.CONTENT_TYPE)

    async def list_services(self, request: Request) -> Response:
        """GET /api/services: every service for an admin key; for a tenant's, what it may see."""
        caller = await self._access.allowed(request, Action.READ)
        return JSONResponse(
            {
                "services": await self._visibility.views(caller, await self._plane.services()),
                # root | prefix | single-user: how workloads become their tenant.
                "isolation": self._plane.settings.privilege.mode,
            }
        )

    async def deploy(self, request: Request) -> Response:
        """POST /api/services[?tenant=NAME] with a YAML or JSON spec.

        The service runs for the caller's tenant (its Slurm account, budgets
        and, when private, its keys only); a site admin may name another with
        ``tenant``. A tenant's own key deploys within the tenant's quotas and
        the site's spec policy. The same name again with a changed spec rolls
        the service out to it.
        """
        principal = await self._access.allowed(request, Action.DEPLOY)
        tenant_id = principal.tenant_id
        if "tenant" in request.query_params:
            principal.require(Action.SITE)
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
            if not principal.is_admin:
                self._policy.check(service)
        except SpecError as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        if not principal.is_admin:
            if not principal.reaches_service(service.name):
                raise Forbidden(
                    f"this key is scoped to other services than {service.name!r}.",
                    fix="deploy it with a key whose scope includes it",
                )
            await _run(self._quotas.check_deploy, tenant_id, principal.tenant, service)
        uses: list[Use] = []
        if self._uses is not None and isinstance(service, Service):
            service, uses = await self._uses.service(principal, service, tenant_id)
        outcome = await self._plane.deploy(service, tenant_id)
        if self._uses is not None:
            await self._uses.record(uses, "service", service.name, tenant_id)
        if outcome != "unchanged":
            action = "service.deployed" if outcome == "created" else "service.updated"
            await record_action(
                self._plane.store, principal, action, service.name, tenant_id=tenant_id
            )
        status = 201 if outcome == "created" else 200
        return JSONResponse({"name": service.name, "result": outcome}, status_code=status)

    async def describe(self, request: Request) -> Response:
        """GET /api/services/{name}: spec and replicas (as ``/v1/services/{name}`` is scoped)."""
        caller = await self._access.allowed(request, Action.READ)
        name = request.path_params["name"]
        described = await self._plane.describe(name)
        return JSONResponse(await self._visibility.view(caller, name, described))

    async def delete(self, request: Request) -> Response:
        """DELETE /api/services/{name}: replicas drain, then the service goes."""
        name = request.path_params["name"]
        principal = await self._owned(request, Action.DEPLOY, name)
        await self._plane.delete(name)
        await record_action(self._plane.store, principal, "service.deleted", name)
        return JSONResponse({"name": name, "result": "deleting"}, 202)

    async def replicas(self, request: Request) -> Response:
        """GET /api/services/{name}/replicas, for its tenant's keys and admins."""
        name = request.path_params["name"]
        await self._owned(request, Action.READ, name)
        await self._plane.describe(name)
        return JSONResponse({"replicas": await self._plane.replicas(name)})

    async def logs(self, request: Request) -> Response:
        """GET /api/services/{name}/logs?replica=ID&lines=N, for its tenant's keys and admins."""
        name = request.path_params["name"]
        await self._owned(request, Action.READ, name)
        try:
            lines = min(10_000, max(1, int(request.query_params.get("lines", "200"))))
        except ValueError as exc:
            raise BadRequest("`lines` must be a whole number.", param="lines") from exc
        text = await self._plane.logs(name, request.query_params.get("replica", ""), lines)
        return PlainTextResponse(text)

    async def job_script(self, request: Request) -> Response:
        """GET /api/services/{name}/job-script: what a new replica would run."""
        name = request.path_params["name"]
        await self._owned(request, Action.READ, name)
        return PlainTextResponse(await self._plane.job_script(name))

    async def _owned(self, request: Request, action: Action, name: str) -> Principal:
        """The caller, when it may ``action`` and ``name`` is its tenant's (404 otherwise)."""
        caller = await self._access.allowed(request, action)
        await self._visibility.owned(caller, name, _no_service(name))
        return caller

    async def list_keys(self, request: Request) -> Response:
        """GET /api/keys: every key for a site admin, the tenant's for a tenant admin."""
        caller = await self._access.allowed(request, Action.MANAGE_TENANT)
        tenant_id = None if caller.is_admin else caller.tenant_id
        return JSONResponse({"keys": await _run(self._plane.store.list_keys, tenant_id)})

    async def create_key(self, request: Request) -> Response:
        """POST /api/keys {"tenant", "role", "name", "expires_in": "30d", "services", "buckets"}.

        A tenant admin mints keys of its own tenant, of its role or below.
        ``services`` and ``buckets`` (lists of names) scope the key to them.
        """
        principal = await self._access.allowed(request, Action.MANAGE_TENANT)
        request_ = _KeyRequest.of(await read_json_object(request), principal)
        master = await _run(load_s3_master, self._plane.settings.objects_master_key_file)
        issued = await _run(
            lambda: issue_key(
                self._plane.store,
                request_.tenant,
                request_.role,
                request_.name,
                request_.expires_at,
                master,
                request_.scope,
            )
        )
        expires = request_.expires_at.isoformat() if request_.expires_at else None
        await record_action(
            self._plane.store,
            principal,
            "key.created",
            f"{request_.tenant} key {issued.key_id}",
            role=request_.role,
            expires_at=expires,
            services=request_.scope.services,
            buckets=request_.scope.buckets,
        )
        return JSONResponse(
            {
                "id": issued.key_id,
                "tenant": issued.tenant,
                "role": issued.role,
                "expires_at": expires,
                "services": request_.scope.services,
                "buckets": request_.scope.buckets,
                "key": issued.secret,
                "s3_access_key_id": issued.s3_access_key_id,
                "s3_secret_access_key": issued.s3_secret_access_key,
            },
            status_code=201,
        )

    async def revoke_key(self, request: Request) -> Response:
        """DELETE /api/keys/{id}: any key for a site admin, the tenant's for a tenant admin."""
        principal = await self._access.allowed(request, Action.MANAGE_TENANT)
        key_id = request.path_params["key_id"]
        tenant_id = None if principal.is_admin else principal.tenant_id
        if not await _run(self._plane.store.revoke_key, key_id, tenant_id):
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


@dataclass(frozen=True)
class _KeyRequest:
    """A request for a new key, checked against what the caller may mint."""

    tenant: str
    role: str
    name: str
    expires_at: datetime | None
    scope: KeyScope

    @classmethod
    def of(cls, document: dict[str, Any], caller: Principal) -> _KeyRequest:
        """The key ``document`` asks for, as ``caller`` may mint it.

        Raises:
            BadRequest: a field is not valid.
            Forbidden: another tenant's key, or a role above the caller's.
        """
        tenant = document.get("tenant", caller.tenant)
        role = document.get("role", "member")
        label = document.get("name", "")
        if not isinstance(tenant, str) or not _is_name(tenant):
            raise BadRequest(
                f"tenant {tenant!r} is not a valid name.",
                fix="use lower case letters, digits and '-', starting with a letter",
                param="tenant",
            )
        if role not in ROLES:
            raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}.", param="role")
        if not isinstance(label, str) or len(label) > 64:
            raise BadRequest("`name` must be a string of at most 64 characters.", param="name")
        if not caller.is_admin and tenant != caller.tenant:
            raise Forbidden(
                f"a tenant admin mints keys of its own tenant ({caller.tenant!r}) only.",
                fix="leave `tenant` out, or ask a site admin",
            )
        if not may_mint(caller.role, role):
            raise Forbidden(
                f"a {caller.role!r} key may not mint a {role!r} key.",
                fix="ask a site admin",
            )
        scope = KeyScope(_names(document, "services"), _names(document, "buckets"))
        if role == "admin" and scope != KeyScope():
            raise BadRequest(
                "an admin key reaches everything; it cannot be scoped.", param="services"
            )
        return cls(tenant, role, label, _expiry(document.get("expires_in")), scope)


def _names(document: dict[str, Any], field: str) -> tuple[str, ...] | None:
    """A scope's list of service or bucket names; None when left out."""
    value = document.get(field)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= 100
        or not all(isinstance(v, str) and _SCOPE_NAME.fullmatch(v) for v in value)
    ):
        raise BadRequest(
            f"`{field}` must be a list of 1 to 100 names (letters, digits, '.', '-').",
            param=field,
        )
    return tuple(sorted(set(value)))


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
