"""ASGI composition: apps mounted by path prefix.

As Starlette's ``Mount`` composes an app, without
rewriting the path (the gateway and the admin app both read the full path)
and at the cost of a few ``startswith`` on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class Mount:
    """HTTP requests whose path starts with ``prefix`` go to ``app``."""

    prefix: str
    app: ASGIApp


class Mounts:
    """The exact path's app, else the first mount whose prefix it starts with, else ``default``.

    ``exact`` serves the hot paths with one lookup, before any prefix is
    tried. Everything that is not HTTP (the lifespan) goes to ``default``.
    """

    def __init__(
        self,
        mounts: Sequence[Mount],
        default: ASGIApp,
        exact: Mapping[str, ASGIApp] | None = None,
    ) -> None:
        self._mounts = tuple((m.prefix, m.app) for m in mounts)
        self._exact = dict(exact or {})
        self._default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI scope with the app its path is mounted at."""
        if scope["type"] == "http":
            path = scope["path"]
            exact = self._exact.get(path)
            if exact is not None:
                await exact(scope, receive, send)
                return
            for prefix, app in self._mounts:
                if path.startswith(prefix):
                    await app(scope, receive, send)
                    return
        await self._default(scope, receive, send)
