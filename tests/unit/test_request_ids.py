import asyncio
import re

import httpx
from starlette.types import Receive, Scope, Send

from aifactory.request_ids import REQUEST_ID, RequestIdMiddleware

seen: list[str] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    seen.append(REQUEST_ID.get())
    status = 500 if scope["path"] == "/fail" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=RequestIdMiddleware(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def test_a_sane_client_id_is_echoed_and_seen_by_the_app() -> None:
    response = get("/", {"X-Request-Id": "trace-1.2:3_x"})
    assert response.headers["x-request-id"] == "trace-1.2:3_x"
    assert seen[-1] == "trace-1.2:3_x"


def test_a_missing_or_unsafe_id_is_replaced_by_a_fresh_one() -> None:
    minted = get("/").headers["x-request-id"]
    unsafe = get("/", {"X-Request-Id": "a b\tc"}).headers["x-request-id"]
    too_long = get("/", {"X-Request-Id": "x" * 129}).headers["x-request-id"]
    for value in (minted, unsafe, too_long):
        assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert len({minted, unsafe, too_long}) == 3


def test_error_responses_carry_the_id_too() -> None:
    response = get("/fail", {"X-Request-Id": "abc"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "abc"


def test_the_id_is_unset_outside_a_request() -> None:
    get("/", {"X-Request-Id": "inside"})
    assert REQUEST_ID.get() == "-"
