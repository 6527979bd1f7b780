"""Tenants, their limits and quotas, the usage ledger and the audit log, over HTTP.

Site admins manage tenants, their limits and quotas, and read everything. A
tenant's keys read their own tenant (its quotas, limits and spend) and its
usage; a tenant admin also sets its keys' limits, within the tenant's, and
reads the audit log of its tenant's keys.
"""

from __future__ import annotations

import asyncio
import re
import reprlib
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aifactory.api.access import Access
from aifactory.api.routes import read_json_object
from aifactory.errors import BadRequest, ConfigError, Forbidden, NotFound
from aifactory.specs import SLURM_NAME_PATTERN, parse_duration_s
from aifactory.store import LIMIT_FIELDS, QUOTA_FIELDS, LimitSet, Store, TenantRow
from aifactory.tenancy import Action, Principal, TenantIdentities, period_bounds, record_action

__all__ = ["TenantsAPI"]
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_SLURM = re.compile(SLURM_NAME_PATTERN)
_SLURM_FIELDS = ("slurm_account", "slurm_partition", "slurm_qos")
_BY = ("model", "key", "day", "kind")

# The store's columns: INTEGER (32 bits on PostgreSQL), BIGINT and FLOAT.
_Int32 = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
_Int64 = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]
_Hours = Annotated[float, Field(ge=0, le=1e12)]
_INT32 = "a whole number from 0 to 2147483647"
_INT64 = f"a whole number from 0 to {2**63 - 1}"
_HOURS = "a number of hours from 0 to 1e12"
_GIB = "a number of GiB from 0 to 1e9"


class _Change(BaseModel):
    """A PUT of settings, range-checked before the store sees it; null removes one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    known: ClassVar[str]

    @classmethod
    def of(cls, document: dict[str, Any]) -> Self:
        """The change ``document`` asks for.

        Raises:
            BadRequest: naming the first field that is unknown or out of range.
        """
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0])
            if error["type"] == "extra_forbidden":
                raise BadRequest(
                    f"unknown field: {field}.", fix=f"use {cls.known}", param=field
                ) from exc
            accepted = cls.model_fields[field].description
            raise BadRequest(
                f"{field} must be {accepted} (got {reprlib.repr(document[field])}).", param=field
            ) from exc


class _QuotasChange(_Change):
    """A PUT of quotas."""

    known: ClassVar[str] = ", ".join(QUOTA_FIELDS)
    replicas: _Int32 | None = Field(default=None, description=_INT32)
    cpus: _Int32 | None = Field(default=None, description=_INT32)
    gpus: _Int32 | None = Field(default=None, description=_INT32)
    memory_gib: Annotated[float, Field(ge=0, le=1e9)] | None = Field(default=None, description=_GIB)
    concurrent_jobs: _Int32 | None = Field(default=None, description=_INT32)
    buckets: _Int32 | None = Field(default=None, description=_INT32)
    bytes: _Int64 | None = Field(default=None, description=_INT64)


class _LimitsChange(_Change):
    """A PUT of limits (a key's own with ``key_id``)."""

    known: ClassVar[str] = f"{', '.join(LIMIT_FIELDS)} and period"
    requests_per_minute: _Int32 | None = Field(default=None, description=_INT32)
    tokens_per_minute: _Int32 | None = Field(default=None, description=_INT32)
    concurrent_requests: _Int32 | None = Field(default=None, description=_INT32)
    token_budget: _Int64 | None = Field(default=None, description=_INT64)
    node_hour_budget: _Hours | None = Field(default=None, description=_HOURS)
    gpu_hour_budget: _Hours | None = Field(default=None, description=_HOURS)
    period: Literal["day", "month"] = Field(default="month", description="'day' or 'month'")
    key_id: int | None = Field(default=None, strict=True, description="a key's id (a number)")


class TenantsAPI:
    """Routes of tenants, limits, usage and audit.

    Args:
        store: Where tenants, limits, quotas, the ledger and the audit log live.
        access: Checks each request's key and role.
        identities: Who each tenant's workloads run as.
    """

    def __init__(self, store: Store, access: Access, identities: TenantIdentities) -> None:
        self._store = store
        self._access = access
        self._identities = identities

    def routes(self) -> list[Route]:
        """Every route of this API."""
        return [
            Route("/api/tenants", self.list_tenants, methods=["GET"]),
            Route("/api/tenants", self.save_tenant, methods=["POST"]),
            Route("/api/tenants/{name}", self.show_tenant, methods=["GET"]),
            Route("/api/tenants/{name}/limits", self.set_limits, methods=["PUT"]),
            Route("/api/tenants/{name}/quotas", self.set_quotas, methods=["PUT"]),
            Route("/api/usage", self.usage, methods=["GET"]),
            Route("/api/audit", self.audit, methods=["GET"]),
        ]

    async def list_tenants(self, request: Request) -> Response:
        """GET /api/tenants: every tenant with its Slurm defaults."""
        await self._access.allowed(request, Action.SITE)
        rows = await asyncio.to_thread(self._store.tenants)
        return JSONResponse({"tenants": [_tenant_view(row) for row in rows]})

    async def save_tenant(self, request: Request) -> Response:
        """POST /api/tenants ``{"name", "slurm_account", …, "unix_user", "unix_group"}``.

        Creates the tenant (201) or updates its Slurm defaults and Unix
        identity (200). A Unix user must exist, be a regular user (not root,
        not a system user) and not the control plane's own; ``null`` removes
        the mapping (the site's rule applies again).
        """
        actor = await self._access.allowed(request, Action.SITE)
        document = await read_json_object(request)
        name = document.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadRequest(
                f"tenant name {name!r} is not valid.",
                fix="use lower case letters, digits and '-', starting with a letter",
                param="name",
            )
        defaults: dict[str, str | None] = {}
        for field in _SLURM_FIELDS:
            if field in document:
                value = document[field]
                if value is not None and (not isinstance(value, str) or not _SLURM.match(value)):
                    raise BadRequest(f"{field} {value!r} is not a Slurm name.", param=field)
                defaults[field] = value
        defaults.update(await self._unix_mapping(document))
        existed = await asyncio.to_thread(self._store.tenant, name) is not None
        await asyncio.to_thread(self._store.ensure_tenant, name)
        if defaults:
            await asyncio.to_thread(self._store.update_tenant, name, **defaults)
        await record_action(
            self._store, actor, "tenant.updated" if existed else "tenant.created", name, **defaults
        )
        row = await asyncio.to_thread(self._store.tenant, name)
        assert row is not None
        return JSONResponse(_tenant_view(row), status_code=200 if existed else 201)

    async def _unix_mapping(self, document: dict[str, Any]) -> dict[str, str | None]:
        """The ``unix_user``/``unix_group`` fields of ``document``, checked against the system."""
        if "unix_user" not in document and "unix_group" not in document:
            return {}
        user, group = document.get("unix_user"), document.get("unix_group")
        for field, value in (("unix_user", user), ("unix_group", group)):
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"{field} must be a string or null.", param=field)
        if user is None:
            if group is not None:
                raise BadRequest("unix_group needs a unix_user.", param="unix_group")
            return {"unix_user": None, "unix_group": None}
        try:
            await asyncio.to_thread(self._identities.check_mapping, user, group)
        except ConfigError as exc:
            raise BadRequest(exc.message, exc.fix, param="unix_user") from exc
        return {"unix_user": user, "unix_group": group}

    async def show_tenant(self, request: Request) -> Response:
        """GET /api/tenants/{name}: defaults, limits, quotas, keys and this period's spend.

        A tenant's own keys read it (its keys only for a tenant admin).
        """
        caller = await self._access.allowed(request, Action.READ)
        row = await self._own_tenant(caller, request.path_params["name"])
        try:
            runs_as: str | None = (await asyncio.to_thread(self._identities.of, row)).describe()
            unmappable = None
        except ConfigError as exc:
            runs_as, unmappable = None, exc.message
        tenant, _own = await asyncio.to_thread(self._store.limits_of, row.id, None)
        keys = None
        if caller.may(Action.MANAGE_TENANT):
            keys = await asyncio.to_thread(self._store.list_keys, row.id)
        quotas = await asyncio.to_thread(self._store.quotas_of, row.id)
        period = tenant.period if tenant else "month"
        start, _end = period_bounds(period, datetime.now(UTC).timestamp())
        since = datetime.fromtimestamp(start, UTC)
        spent = {
            column: await asyncio.to_thread(self._store.usage_sum, row.id, since, column)
            for column in ("prompt_tokens", "completion_tokens", "node_hours", "gpu_hours")
        }
        return JSONResponse(
            _tenant_view(row)
            | {
                "runs_as": runs_as,
                "runs_as_error": unmappable,
                "limits": tenant.__dict__ if tenant else None,
                "quotas": quotas.__dict__,
                "keys": keys,
                "spent_this_period": spent | {"period": period, "since": since.isoformat()},
            }
        )

    async def set_limits(self, request: Request) -> Response:
        """PUT /api/tenants/{name}/limits ``{"requests_per_minute": 60, …, "key_id": N}``.

        Fields left out keep their value; ``null`` removes a limit. With
        ``key_id`` the limits are the key's own, else the tenant's. A tenant
        admin sets its own keys' limits, each within the tenant's.
        """
        actor = await self._access.allowed(request, Action.MANAGE_TENANT)
        row = await self._own_tenant(actor, request.path_params["name"])
        change = _LimitsChange.of(await read_json_object(request))
        key_id = change.key_id
        document = change.model_dump(exclude_unset=True, exclude={"key_id"})
        if key_id is None:
            actor.require(Action.SITE)
        else:
            keys = await asyncio.to_thread(self._store.list_keys, row.id)
            if not any(k["id"] == key_id for k in keys):
                raise NotFound(f"tenant {row.name!r} has no key {key_id!r}.", param="key_id")
            if not actor.is_admin:
                tenant_limits, _own = await asyncio.to_thread(self._store.limits_of, row.id, None)
                _within(document, tenant_limits)
        await asyncio.to_thread(self._store.set_limits, row.id, key_id, **document)
        target = row.name if key_id is None else f"{row.name} key {key_id}"
        await record_action(self._store, actor, "limits.changed", target, **document)
        tenant, own = await asyncio.to_thread(self._store.limits_of, row.id, key_id)
        limits = own if key_id is not None else tenant
        return JSONResponse({"tenant": row.name, "key_id": key_id, "limits": limits.__dict__})

    async def set_quotas(self, request: Request) -> Response:
        """PUT /api/tenants/{name}/quotas ``{"cpus": 16, "replicas": 4, …}`` (site admins).

        Fields left out keep their value; ``null`` removes a quota.
        """
        actor = await self._access.allowed(request, Action.SITE)
        row = await self._tenant(request.path_params["name"])
        change = _QuotasChange.of(await read_json_object(request))
        document = change.model_dump(exclude_unset=True)
        await asyncio.to_thread(self._store.set_quotas, row.id, **document)
        await record_action(self._store, actor, "quotas.changed", row.name, **document)
        quotas = await asyncio.to_thread(self._store.quotas_of, row.id)
        return JSONResponse({"tenant": row.name, "quotas": quotas.__dict__})

    async def usage(self, request: Request) -> Response:
        """GET /api/usage?tenant=T&since=7d&by=model|key|day|kind: the ledger, summed.

        A tenant's key sees its own tenant only.
        """
        caller = await self._access.allowed(request, Action.READ)
        params = request.query_params
        by = params.get("by", "model")
        if by not in _BY:
            raise BadRequest(f"by must be one of {', '.join(_BY)}.", param="by")
        since = None
        if "since" in params:
            try:
                since = datetime.fromtimestamp(
                    datetime.now(UTC).timestamp() - parse_duration_s(params["since"]), UTC
                )
            except ValueError as exc:
                raise BadRequest(str(exc), param="since") from exc
        tenant_id: int | None = caller.tenant_id
        if caller.is_admin:
            tenant_id = (await self._tenant(params["tenant"])).id if "tenant" in params else None
        elif params.get("tenant", caller.tenant) != caller.tenant:
            raise NotFound(f"tenant {params['tenant']!r} does not exist.", param="tenant")
        rows = await asyncio.to_thread(self._store.usage_report, tenant_id, since, by)
        return JSONResponse(
            {"by": by, "since": since.isoformat() if since else None, "usage": rows}
        )

    async def audit(self, request: Request) -> Response:
        """GET /api/audit?limit=N: the newest actions (a tenant admin: its tenant's keys')."""
        caller = await self._access.allowed(request, Action.MANAGE_TENANT)
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError as exc:
            raise BadRequest("`limit` must be a whole number.", param="limit") from exc
        actor_tenant = None if caller.is_admin else caller.tenant
        rows = await asyncio.to_thread(self._store.audit, limit, actor_tenant)
        return JSONResponse(
            {
                "audit": [
                    {
                        "at": row.at.isoformat(),
                        "actor_key_id": row.actor_key_id,
                        "actor_tenant": row.actor_tenant,
                        "action": row.action,
                        "target": row.target,
                        "detail": row.detail,
                    }
                    for row in rows
                ]
            }
        )

    async def _own_tenant(self, caller: Principal, name: str) -> TenantRow:
        """Tenant ``name`` when ``caller`` is a site admin or one of its keys; else 404."""
        if not caller.is_admin and name != caller.tenant:
            raise NotFound(f"tenant {name!r} does not exist.", fix=f"use {caller.tenant!r}")
        return await self._tenant(name)

    async def _tenant(self, name: str) -> TenantRow:
        row = await asyncio.to_thread(self._store.tenant, name)
        if row is None:
            raise NotFound(f"tenant {name!r} does not exist.", fix="see `aifactory tenants ls`")
        return row


def _within(document: dict[str, Any], tenant: LimitSet | None) -> None:
    """Refuse a key limit a tenant admin sets above (or without) the tenant's own."""
    for field, value in document.items():
        ceiling = getattr(tenant, field, None) if tenant is not None else None
        if field == "period" or ceiling is None:
            continue
        if value is None or value > ceiling:
            raise Forbidden(
                f"{field}: the tenant's own limit is {ceiling}; a key's cannot be "
                f"{'unlimited' if value is None else value}.",
                fix=f"set it at most {ceiling}, or ask a site admin to raise the tenant's",
            )


def _tenant_view(row: TenantRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "slurm_account": row.slurm_account,
        "slurm_partition": row.slurm_partition,
        "slurm_qos": row.slurm_qos,
        "unix_user": row.unix_user,
        "unix_group": row.unix_group,
        "created_at": row.created_at.isoformat(),
    }
