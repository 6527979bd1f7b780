"""The batch-jobs part of the admin API, under ``/api/jobs``.

A tenant's keys see and cancel its own jobs only (another tenant's answer
404); members submit within the tenant's quota of concurrent jobs and the
site's spec policy. Endpoints raise our errors; the app's handler
(``server.py``) turns them into the shared JSON error shape.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aifactory.api.access import Access
from aifactory.catalog import CatalogUses, Use
from aifactory.errors import BadRequest, SpecError
from aifactory.jobs import JobsManager
from aifactory.specs import SpecPolicy, load_job
from aifactory.tenancy import Action, Principal, Quotas

_MAX_SPEC_BYTES = 256 * 1024


class JobsAPI:
    """Routes that submit, list, describe, read and cancel batch jobs.

    Args:
        manager: The jobs facade.
        access: Checks each request's key and role.
        quotas: The tenants' quotas.
        policy: What tenants may set in a job spec.
        uses: Resolves the catalog entries a job names (and records its lineage).
    """

    def __init__(
        self,
        manager: JobsManager,
        access: Access,
        quotas: Quotas,
        policy: SpecPolicy,
        uses: CatalogUses | None = None,
    ) -> None:
        self._jobs = manager
        self._access = access
        self._quotas = quotas
        self._policy = policy
        self._uses = uses

    def routes(self) -> list[Route]:
        """Every route of the jobs API."""
        return [
            Route("/api/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/jobs", self.submit, methods=["POST"]),
            Route("/api/jobs/{job_id}", self.describe, methods=["GET"]),
            Route("/api/jobs/{job_id}", self.cancel, methods=["DELETE"]),
            Route("/api/jobs/{job_id}/logs", self.logs, methods=["GET"]),
        ]

    async def list_jobs(self, request: Request) -> Response:
        """GET /api/jobs?limit=N: the newest jobs first (a tenant's key: its tenant's)."""
        caller = await self._access.allowed(request, Action.READ)
        limit = _whole(request, "limit", 50, 1, 1000)
        return JSONResponse({"jobs": await self._jobs.jobs(limit, _scope(caller))})

    async def submit(self, request: Request) -> Response:
        """POST /api/jobs with a YAML or JSON Job spec; ``?dry_run=1`` returns what it would send.

        That is the batch script on Slurm, the Job manifests on Kubernetes.
        """
        principal = await self._access.allowed(request, Action.DEPLOY)
        body = await request.body()
        if len(body) > _MAX_SPEC_BYTES:
            raise BadRequest(f"The spec is larger than {_MAX_SPEC_BYTES} bytes.")
        origin = request.headers.get("x-spec-origin", "job spec")[:200]
        try:
            job = await asyncio.to_thread(load_job, body.decode("utf-8", errors="replace"), origin)
            if not principal.is_admin:
                self._policy.check(job)
        except SpecError as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        uses: list[Use] = []
        if self._uses is not None:
            job, uses = await self._uses.job(principal, job)
        if request.query_params.get("dry_run") in ("1", "true"):
            return PlainTextResponse(self._jobs.render(job))
        if not principal.is_admin:
            active = await self._jobs.active_jobs(principal.tenant_id)
            await asyncio.to_thread(
                self._quotas.check_job, principal.tenant_id, principal.tenant, active
            )
        view = await self._jobs.submit(job, principal.tenant_id)
        if self._uses is not None:
            await self._uses.record(uses, "job", view["id"], principal.tenant_id)
        return JSONResponse(view, status_code=201)

    async def describe(self, request: Request) -> Response:
        """GET /api/jobs/{id}: state per array task, exit code, nodes."""
        caller = await self._access.allowed(request, Action.READ)
        return JSONResponse(
            await self._jobs.describe(request.path_params["job_id"], _scope(caller))
        )

    async def logs(self, request: Request) -> Response:
        """GET /api/jobs/{id}/logs?task=N&lines=N."""
        caller = await self._access.allowed(request, Action.READ)
        lines = _whole(request, "lines", 200, 1, 100_000)
        task = None
        if request.query_params.get("task", "") != "":
            task = _whole(request, "task", 0, 0, 10_000_000)
        text = await self._jobs.logs(request.path_params["job_id"], task, lines, _scope(caller))
        return PlainTextResponse(text)

    async def cancel(self, request: Request) -> Response:
        """DELETE /api/jobs/{id}: cancel every task of the job (scancel, or delete its Jobs)."""
        caller = await self._access.allowed(request, Action.DEPLOY)
        view = await self._jobs.cancel(request.path_params["job_id"], _scope(caller))
        return JSONResponse(view, 202)


def _scope(caller: Principal) -> int | None:
    """The tenant whose jobs ``caller`` sees; None (all) for a site admin."""
    return None if caller.is_admin else caller.tenant_id


def _whole(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name, "")
    if text == "":
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(f"`{name}` must be a whole number.", param=name) from exc
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be between {low} and {high}.", param=name)
    return value
