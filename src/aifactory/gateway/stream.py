"""The response side of one gateway request: started or not, SSE or not."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Send

from aifactory.errors import APIError
from aifactory.gateway.responses import JSON_HEADERS, error_body
from aifactory.request_ids import HEADER


class Exchange:
    """Wraps ``send``, remembering whether (and how) the response has started.

    Every response carries the request's id (``x-request-id``). An error
    before the start becomes an OpenAI error response; an error after an SSE
    start becomes a final ``data: {"error": …}`` event, which OpenAI clients
    raise as an API error.
    """

    __slots__ = ("_id_header", "_send", "finished", "sse", "started")

    def __init__(self, send: Send, request_id: bytes) -> None:
        self._send = send
        self._id_header = (HEADER, request_id)
        self.started = False
        self.finished = False
        self.sse = False

    async def start(
        self, status: int, headers: list[tuple[bytes, bytes]], *, sse: bool = False
    ) -> None:
        """Send the status line and ``headers`` (an SSE response when ``sse``)."""
        self.started = True
        self.sse = sse
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, self._id_header],
            }
        )

    async def json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Send a whole JSON response."""
        body = json.dumps(payload).encode()
        head = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await self.start(status, head)
        await self.send({"type": "http.response.body", "body": body})

    async def error(self, exc: APIError) -> None:
        """Send ``exc`` as OpenAI error JSON with its status and headers."""
        await self.json(exc.status_code, error_body(exc), exc.headers)

    async def send(self, message: Message) -> None:
        """Send a body message."""
        if not message.get("more_body", False):
            self.finished = True
        await self._send(message)

    @property
    def send_more(self) -> Send:
        """What sends body messages with ``more_body`` (``send`` less its check, per chunk)."""
        return self._send

    async def fail_stream(self, exc: APIError) -> None:
        """End a started SSE response with an error event."""
        await self.fail_stream_with(json.dumps(error_body(exc)).encode())

    async def fail_stream_with(self, document: bytes) -> None:
        """End a started SSE response with an error event carrying ``document`` (JSON)."""
        await self.send({"type": "http.response.body", "body": b"data: " + document + b"\n\n"})
