"""Mounts: an exact path first, then prefixes in order, then the default."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from aifactory.asgi import Mount, Mounts


class Named:
    """An app that records the paths it served."""

    def __init__(self) -> None:
        self.served: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.served.append(scope.get("path", scope["type"]))


async def _nothing() -> dict[str, object]:
    return {}


async def _drop(_message: object) -> None:
    return None


def test_exact_paths_then_prefixes_then_the_default() -> None:
    exact, prefixed, default = Named(), Named(), Named()
    app = Mounts([Mount("/v1/services/", prefixed)], default, exact={"/v1/chat": exact})

    async def serve(path: str) -> None:
        await app({"type": "http", "path": path}, _nothing, _drop)

    async def scenario() -> None:
        for path in ("/v1/chat", "/v1/services/x", "/v1/chat/more", "/api/x"):
            await serve(path)
        await app({"type": "lifespan"}, _nothing, _drop)

    asyncio.run(scenario())
    assert exact.served == ["/v1/chat"]
    assert prefixed.served == ["/v1/services/x"]
    assert default.served == ["/v1/chat/more", "/api/x", "lifespan"]
