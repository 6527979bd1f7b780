"""The response side of one gateway request: started or not, SSE or not."""

from __future__ import annotations

import json

from starlette.types import Message, Send

from aifactory.errors import APIError
from aifactory.gateway.responses import error_body


class Exchange:
    """Wraps ``send``, remembering whether (and how) the response has started.

    An error before the start becomes an OpenAI error response; an error after
    an SSE start becomes a final ``data: {"error": …}`` event, which OpenAI
    clients raise as an API error.
    """

    __slots__ = ("_send", "finished", "sse", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False
        self.sse = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the status line and headers."""
        self.started = True
        self.sse = any(
            k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
        )
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, message: Message) -> None:
        """Send a body message."""
        if not message.get("more_body", False):
            self.finished = True
        await self._send(message)

    async def fail_stream(self, exc: APIError) -> None:
        """End a started SSE response with an error event."""
        event = b"data: " + json.dumps(error_body(exc)).encode() + b"\n\n"
        await self.send({"type": "http.response.body", "body": event})
