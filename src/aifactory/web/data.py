"""The dashboard's data endpoints, under ``/api/dashboard``.

Every endpoint checks the caller's key. What a key sees:

- any key: who it is;
- a tenant's key (member or tenant admin): its own tenant's services in
  full, other tenants' public ones by name and models only
  (``api/visibility.py``), the counters and replicas of its own services and
  their models, and its own tenant's usage only;
- an admin key: every service, model and tenant's usage, and the factory's
  counters.

Buckets and objects (``web/buckets.py``) are scoped like S3: a user key reaches its
tenant's buckets and those shared with it, an admin key every bucket.

Keys, quotas, batch jobs and logs stay behind the admin API's own checks
(``/api/keys``, ``/api/tenants/{name}``, ``/api/jobs``, ``/api/services/{name}/logs``).
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aifactory import metrics
from aifactory.api import Access, ServiceVisibility
from aifactory.control import ControlPlane
from aifactory.errors import BadRequest
from aifactory.tenancy import Action
from aifactory.web.buckets import BucketsData, ObjectBrowser
from aifactory.web.samples import MetricsSampler

_USAGE_COLUMNS = ("start", "tenant", "model", "requests", "prompt_tokens", "completion_tokens")
_MAX_WINDOW_S = 31 * 24 * 3600
_MAX_BUCKETS = 5000


class DashboardData:
    """Routes that feed the dashboard's pages.

    Args:
        plane: Services, replicas and the store.
        sampler: The ring of recent samples for the live charts.
        access: Checks each request's key and role.
        objects: Object storage to browse, or None while it is not enabled.
    """

    def __init__(
        self,
        plane: ControlPlane,
        sampler: MetricsSampler,
        access: Access,
        objects: ObjectBrowser | None = None,
    ) -> None:
        self._plane = plane
        self._sampler = sampler
        self._access = access
        self._visibility = ServiceVisibility(plane.store)
        self._buckets = BucketsData(objects, access.caller)

    def routes(self) -> list[Route]:
        """Every data route of the dashboard."""
        return [
            Route("/api/dashboard/me", self.me, methods=["GET"]),
            Route("/api/dashboard/overview", self.overview, methods=["GET"]),
            Route("/api/dashboard/usage", self.usage, methods=["GET"]),
            *self._buckets.routes(),
        ]

    async def me(self, request: Request) -> Response:
        """GET /api/dashboard/me: the caller's tenant, role and what it may do (signing in)."""
        caller = await self._access.caller(request)
        may = [action.name.lower() for action in Action if caller.may(action)]
        return JSONResponse({"tenant": caller.tenant, "role": caller.role, "may": may})

    async def overview(self, request: Request) -> Response:
        """GET /api/dashboard/overview: services, replicas, counters and the last hour."""
        caller = await self._access.allowed(request, Action.READ)
        services = await self._visibility.views(caller, await self._plane.services())
        specs = {row.name: row.spec for row in await asyncio.to_thread(self._plane.store.services)}
        for service in services:
            service["api"] = _api_of(specs.get(service["name"], {}))
        owned = await self._visibility.owned_names(caller)
        names = None
        if owned is not None:
            names = set(owned).union(*(_models_of(specs.get(name, {})) for name in owned))
        now = metrics.snapshot(names)
        by_model = {
            model: asdict(totals)
            for model, totals in now.by_model.items()
            if owned is None or any(model in _models_of(specs.get(name, {})) for name in owned)
        }
        return JSONResponse(
            {
                "services": services,
                "isolation": self._plane.settings.privilege.mode,
                "unreachable": [o["message"] for o in self._plane.health()["unreachable"]],
                "replicas": [
                    {"state": state, "backend": backend, "count": count}
                    for (state, backend), count in sorted(now.replicas.items())
                ],
                "totals": {
                    "requests": now.requests,
                    "errors": now.errors,
                    "tokens": now.tokens,
                    "in_flight": now.in_flight,
                    "queued": now.queued,
                },
                "by_model": by_model,
                "interval_s": self._sampler.interval_s,
                "samples": self._sampler.samples(names),
            }
        )

    async def usage(self, request: Request) -> Response:
        """GET /api/dashboard/usage?window_s=&bucket_s=&format=json|csv: usage over time.

        A tenant's key gets its own tenant's rows only, whatever it asks for.
        """
        caller = await self._access.allowed(request, Action.READ)
        window_s = _whole(request, "window_s", 3600, 60, _MAX_WINDOW_S)
        bucket_s = _whole(request, "bucket_s", 60, 10, _MAX_WINDOW_S)
        if window_s // bucket_s > _MAX_BUCKETS:
            raise BadRequest(
                f"{window_s // bucket_s} buckets is more than {_MAX_BUCKETS}.",
                fix="ask for a larger bucket_s or a smaller window_s",
                param="bucket_s",
            )
        since = datetime.now(UTC) - timedelta(seconds=window_s)
        tenant = None if caller.is_admin else caller.tenant_id
        rows = [
            asdict(bucket)
            for bucket in await asyncio.to_thread(
                self._plane.store.usage_buckets, since, bucket_s, tenant
            )
        ]
        if request.query_params.get("format") == "csv":
            return Response(
                _csv(rows),
                media_type="text/csv",
                headers={"Content-Disposition": 'attachment; filename="aifactory-usage.csv"'},
            )
        return JSONResponse({"window_s": window_s, "bucket_s": bucket_s, "buckets": rows})


def _api_of(spec: dict[str, Any]) -> str:
    """Which request the page's example sends: ``chat``, ``embeddings`` or ``functions``."""
    if spec.get("kind") == "FunctionPool":
        return "functions"
    args = spec.get("engine", {}).get("args", {})
    return "embeddings" if isinstance(args, dict) and args.get("embedding") else "chat"


def _models_of(spec: dict[str, Any]) -> set[str]:
    return {m["name"] if isinstance(m, dict) else m for m in spec.get("models", [])}


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_USAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        start = datetime.fromtimestamp(row["start"], UTC).isoformat()
        writer.writerow({**row, "start": start})
    return out.getvalue()


def _whole(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name, "")
    if text == "":
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(f"`{name}` must be a whole number of seconds.", param=name) from exc
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be between {low} and {high}.", param=name)
    return value
