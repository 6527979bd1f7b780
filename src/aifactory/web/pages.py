"""The dashboard's page and static assets, served at ``/`` with no build step.

The page holds no data: it signs in with an API key kept in the tab's
``sessionStorage`` and fetches everything from the key-checked API. A strict
Content-Security-Policy (no inline script, nothing from other origins) keeps
an injected string from ever reading that key.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"


def security_headers(connect_to: tuple[str, ...] = ()) -> dict[str, str]:
    """The page's security headers; ``connect_to``: other origins its script may reach."""
    connect = " ".join(("'self'", *connect_to))
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


class _Assets(StaticFiles):
    """Static files with the dashboard's security headers."""

    def __init__(self, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self._headers]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def page_routes(connect_to: tuple[str, ...] = ()) -> list[BaseRoute]:
    """``/`` (the single page) and ``/assets/*`` (its script, style and icon).

    ``connect_to``: origins besides its own the page talks to (the S3
    endpoint, where its uploads go).
    """
    headers = security_headers(connect_to)

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=headers)

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount("/assets", app=_Assets(STATIC_DIR, headers), name="assets"),
    ]
