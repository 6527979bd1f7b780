"""An engine's error answer rewritten in OpenAI's shape, its message kept.

llama.cpp answers ``{"error": {"code": 400, "message": "Field 'max_tokens':
…", "type": "invalid_request_error"}}``: no ``param``, an integer ``code``,
and its own ``type`` for a prompt too long (``exceed_context_size_error``).
Clients that branch on ``type``, ``param`` and ``code`` then saw two
dialects; this is the one place that folds the engine's into OpenAI's. It
runs on error answers only.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aifactory.gateway.responses import JSON_HEADERS

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES_BY_ENGINE_TYPE = {"exceed_context_size_error": "context_length_exceeded"}
# llama.cpp names the field it refused: "Field 'max_tokens': ...".
_FIELD = re.compile(r"^Field '([A-Za-z_][\w.\[\]]*)'")
_MAX_MESSAGE = 2000


def openai_error(status: int, body: bytes) -> bytes:
    """The OpenAI error document for an engine's ``status`` and ``body``."""
    engine: dict[str, Any] = {}
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        inner = document.get("error")
        engine = inner if isinstance(inner, dict) else {"message": inner or document.get("detail")}
    message = engine.get("message")
    if not isinstance(message, str) or not message:
        message = body[:_MAX_MESSAGE].decode(errors="replace").strip() or f"HTTP {status}"
    engine_type = engine.get("type")
    param = engine.get("param")
    if not isinstance(param, str):
        field = _FIELD.match(message)
        param = field.group(1) if field else None
    code = engine.get("code")
    if not isinstance(code, str):
        code = _CODES_BY_ENGINE_TYPE.get(engine_type) if isinstance(engine_type, str) else None
    error_type = _TYPES_BY_STATUS.get(status, "server_error" if status >= 500 else None)
    if error_type is None:
        error_type = engine_type if isinstance(engine_type, str) else "invalid_request_error"
    document = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(document).encode()


def error_headers(data: bytes) -> list[tuple[bytes, bytes]]:
    """The response headers of an error document ``data``."""
    return [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
