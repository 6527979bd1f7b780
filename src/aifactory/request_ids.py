"""Request ids: taken from a sane ``X-Request-Id`` or minted, echoed on every response.

One raw ASGI middleware wraps the whole app (gateway and admin API alike), so
every response, errors included, carries the id, and every log line written
while the request runs can name it (``logs.py`` reads ``REQUEST_ID``).
"""

from __future__ import annotations

import itertools
import re
import secrets
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
HEADER = b"x-request-id"
# Ids end up in logs and headers: allow only what cannot forge a log line or a header.
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


_PROCESS = secrets.token_hex(4)
_COUNT = itertools.count()


def mint_request_id() -> str:
    """A fresh id: this process's random prefix and a counter (16 hex digits).

    Unique, not secret: ids only match log lines. Reading the OS's random
    source for each request cost ~6% of the gateway's CPU.
    """
    return f"{_PROCESS}{next(_COUNT) & 0xFFFFFFFF:08x}"


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-Id`` if it is sane, else a fresh one."""
    return sane_request_id(next((value for name, value in headers if name == HEADER), None))


def sane_request_id(value: bytes | None) -> str:
    """``value`` (a client's ``X-Request-Id``) if it is sane, else a fresh id."""
    return value.decode() if value is not None and _SANE.fullmatch(value) else mint_request_id()


class RequestIdMiddleware:
    """Sets ``REQUEST_ID`` for the request and adds ``x-request-id`` to its response."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection scope; only HTTP requests get an id."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        header = (HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
