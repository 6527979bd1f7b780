"""The jobs HTTP API over an in-process ASGI client, as an admin of the given tenant."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aifactory.api import Access
from aifactory.api.jobs import JobsAPI
from aifactory.errors import APIError
from aifactory.gateway import error_body
from aifactory.jobs import JobsManager
from aifactory.specs import SpecPolicy
from aifactory.tenancy import Principal, Quotas


class _Always:
    """An authenticator that answers every header with one principal."""

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    async def authenticate_header(self, _authorization: str) -> Principal:
        return self._principal


def jobs_client(manager: JobsManager, principal: Principal) -> httpx.AsyncClient:
    """An HTTP client of ``JobsAPI(manager)`` that authenticates every call as ``principal``."""

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return JSONResponse(error_body(exc), status_code=exc.status_code)

    app = Starlette(
        routes=JobsAPI(
            manager,
            Access(_Always(principal)),
            Quotas(manager.store),
            SpecPolicy(),
        ).routes(),
        exception_handlers={APIError: api_error},
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
