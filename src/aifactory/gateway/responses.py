"""The one place that writes OpenAI error JSON, and the JSON response headers."""

from __future__ import annotations

from typing import Any

from aifactory.errors import APIError

JSON_HEADERS = [(b"content-type", b"application/json")]


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
