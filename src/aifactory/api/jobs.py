"""The batch-jobs part of the admin API, under ``/api/jobs``.

Endpoints raise our errors; the app's handler (``server.py``) turns them into
the shared JSON error shape. Authentication is the admin API's, passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aifactory.errors import BadRequest, SpecError
from aifactory.jobs import JobsManager
from aifactory.specs import load_job
from aifactory.tenancy import Principal

_MAX_SPEC_BYTES = 256 * 1024

Authenticate = Callable[[Request], Awaitable[Principal]]


class JobsAPI:
    """Routes that submit, list, describe, read and cancel batch jobs.

    Args:
        manager: The jobs facade.
        authenticate_admin: Checks the request's key is an admin's; raises
            ``Unauthorized``/``Forbidden`` otherwise.
    """

    def __init__(self, manager: JobsManager, authenticate_admin: Authenticate) -> None:
        self._jobs = manager
        self._admin = authenticate_admin

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
        """GET /api/jobs?limit=N: the newest jobs first."""
        await self._admin(request)
        limit = _whole(request, "limit", 50, 1, 1000)
        return JSONResponse({"jobs": await self._jobs.jobs(limit)})

    async def submit(self, request: Request) -> Response:
        """POST /api/jobs with a YAML or JSON Job spec; ``?dry_run=1`` returns what it would send.

        That is the batch script on Slurm, the Job manifests on Kubernetes.
        """
        principal = await self._admin(request)
        body = await request.body()
        if len(body) > _MAX_SPEC_BYTES:
            raise BadRequest(f"The spec is larger than {_MAX_SPEC_BYTES} bytes.")
        origin = request.headers.get("x-spec-origin", "job spec")[:200]
        try:
            job = await asyncio.to_thread(load_job, body.decode("utf-8", errors="replace"), origin)
        except SpecError as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        if request.query_params.get("dry_run") in ("1", "true"):
            return PlainTextResponse(self._jobs.render(job))
        view = await self._jobs.submit(job, principal.tenant_id)
        return JSONResponse(view, status_code=201)

    async def describe(self, request: Request) -> Response:
        """GET /api/jobs/{id}: state per array task, exit code, nodes."""
        await self._admin(request)
        return JSONResponse(await self._jobs.describe(request.path_params["job_id"]))

    async def logs(self, request: Request) -> Response:
        """GET /api/jobs/{id}/logs?task=N&lines=N."""
        await self._admin(request)
        lines = _whole(request, "lines", 200, 1, 100_000)
        task = None
        if request.query_params.get("task", "") != "":
            task = _whole(request, "task", 0, 0, 10_000_000)
        text = await self._jobs.logs(request.path_params["job_id"], task, lines)
        return PlainTextResponse(text)

    async def cancel(self, request: Request) -> Response:
        """DELETE /api/jobs/{id}: cancel every task of the job (scancel, or delete its Jobs)."""
        await self._admin(request)
        return JSONResponse(await self._jobs.cancel(request.path_params["job_id"]), 202)


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
