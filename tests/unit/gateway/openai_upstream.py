"""A tiny OpenAI-compatible engine on a free port, in the test's own event loop.

It answers ``/v1/chat/completions`` and ``/v1/completions``, streamed (SSE,
with the usage chunk only when ``stream_options.include_usage`` asks) or not,
and ``/v1/embeddings``, each with a ``usage`` field, the way llama.cpp and vLLM
do. It records what it received, can hold its answers until the test lets
them go, and can answer with an error status instead.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PROMPT_TOKENS = 7
COMPLETION_TOKENS = 3
WORDS = ("Hel", "lo", "!")


@dataclass(frozen=True)
class Received:
    """One request as the engine saw it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Upstream:
    """The engine; ``base_url`` is set by ``start``."""

    status: int = 200
    base_url: str = ""
    set_cookie: str = ""  # a Set-Cookie header on every answer (a hostile engine's)
    received: list[Received] = field(default_factory=list)
    # Set once a request has arrived; cleared by whoever waits for the next one.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Answers go out only while this is set.
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once a stream's [DONE] is written; a stream then ends only while
    # ``closing`` is set, by closing its connection without ending the
    # chunked body when ``close_uncleanly``.
    sent_done: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    close_uncleanly: bool = False
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; returns the base URL."""
        self.answering.set()
        self.closing.set()
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            app.router.add_post(path, self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, body, dict(request.headers)))
        self.arrived.set()
        await self.answering.wait()
        if self.status != 200:
            error = {"error": {"message": "engine says no", "type": "server_error", "code": None}}
            return web.json_response(error, status=self.status)
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        if request.path == "/v1/embeddings":
            data = [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]
            return web.json_response({"object": "list", "data": data, "usage": usage})
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(WORDS)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            document = {
                "id": "cmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }
            answer = web.json_response(document)
            if self.set_cookie:
                answer.headers["Set-Cookie"] = self.set_cookie
            return answer
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in WORDS:
            chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": word}}]}
            await response.write(event(chunk))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(
                event({"object": "chat.completion.chunk", "choices": [], "usage": usage})
            )
        await response.write(b"data: [DONE]\n\n")
        self.sent_done.set()
        await self.closing.wait()
        if self.close_uncleanly and request.transport is not None:
            request.transport.close()
            return response
        await response.write_eof()
        return response


def event(document: object) -> bytes:
    """One SSE event carrying ``document``."""
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def events(body: str) -> list[Any]:
    """The JSON documents of an SSE body (``[DONE]`` as the string), comments left out."""
    out: list[Any] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
