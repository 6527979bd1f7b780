"""The floor for a Python gateway: raw ASGI on uvicorn (uvloop + httptools) + aiohttp.

No auth, no routing, no limits, no metering: it forwards every POST to one
upstream and streams the answer back. bench/gateway_overhead.py runs it as
the ``bare`` target so the gateway's cost is measured against it in the same
run, not remembered from another::

    python bench/bare_proxy.py --upstream http://127.0.0.1:9000 --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

_FORWARDED = {"content-type", "cache-control"}


class BareProxy:
    """Forwards requests to ``upstream`` with one pooled aiohttp session."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3),
                        auto_decompress=False,
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._session is not None:
                        await self._session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self._session is not None
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        async with self._session.post(
            self._upstream + scope["path"],
            data=b"".join(chunks),
            headers={"Content-Type": "application/json"},
        ) as response:
            headers = [
                (name.lower().encode(), value.encode())
                for name, value in response.headers.items()
                if name.lower() in _FORWARDED
            ]
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                data = await response.read()
                headers.append((b"content-length", str(len(data)).encode()))
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": data})
                return
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        BareProxy(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
