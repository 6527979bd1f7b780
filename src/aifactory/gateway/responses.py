"""Raw ASGI response helpers, and the one place that writes OpenAI error JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

from aifactory.errors import APIError

JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_json(
    send: Send, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    """Send a whole JSON response."""
    body = json.dumps(payload).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(exc: APIError) -> dict[str, Any]:
    """An OpenAI-style error document for ``exc``."""
    return {
        "error": {
            "message": str(exc),
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


async def send_error(send: Send, exc: APIError) -> None:
    """Send ``exc`` as OpenAI error JSON with its status and headers."""
    await send_json(send, exc.status_code, error_body(exc), exc.headers)
