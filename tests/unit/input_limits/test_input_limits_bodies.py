import asyncio
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aifactory.errors import APIError
from aifactory.input_limits import BodyLimit, BodyRule


async def _echo_size(request: Request) -> Response:
    return JSONResponse({"size": len(await request.body())})


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code)


def _limited_app() -> BodyLimit:
    app = Starlette(
        routes=[Route("/{path:path}", _echo_size, methods=["POST", "PUT"])],
        exception_handlers={APIError: _api_error},
    )
    return BodyLimit(
        app,
        [
            BodyRule("/small/", 10, "small routes", "AIFACTORY_SMALL"),
            BodyRule("/uploads/", None, methods=frozenset({"PUT"})),
            BodyRule("/", 100, "other routes"),
        ],
    )


def _post(method: str, path: str, body: bytes | list[bytes]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=_limited_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            content = body if isinstance(body, bytes) else _chunks(body)
            return await client.request(method, path, content=content)

    return asyncio.run(send())


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_a_body_within_its_routes_limit_passes() -> None:
    assert _post("POST", "/small/x", b"x" * 10).json() == {"size": 10}
    assert _post("POST", "/other", b"x" * 100).json() == {"size": 100}


def test_an_announced_body_over_the_limit_is_refused_with_the_setting_to_raise() -> None:
    response = _post("POST", "/small/x", b"x" * 11)
    assert response.status_code == 413
    assert response.json()["error"] == (
        "The request body is larger than 10 bytes, the most small routes take. "
        "Fix: send less, or raise AIFACTORY_SMALL"
    )


def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    response = _post("POST", "/other", [b"x" * 60, b"x" * 60])
    assert response.status_code == 413
    assert "100 bytes, the most other routes take" in response.json()["error"]


def test_a_rule_can_leave_a_method_to_the_route() -> None:
    assert _post("PUT", "/uploads/a", b"x" * 1000).json() == {"size": 1000}
    assert _post("POST", "/uploads/a", b"x" * 1000).status_code == 413
