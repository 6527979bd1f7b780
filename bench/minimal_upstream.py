"""A minimal, fast OpenAI-compatible server for gateway benchmarks.

Raw asyncio Protocol + httptools (uvloop when installed); HTTP/1.1 keep-alive.
It answers with fixed payloads so that a proxy in front of it is what costs::

    POST /v1/chat/completions   whole JSON with ``usage``, or (``"stream": true``)
                                SSE: role chunk, 3 content chunks, finish chunk,
                                a usage chunk when ``stream_options.include_usage``,
                                then ``data: [DONE]``; one HTTP chunk per event
    GET  /v1/models             one model
    GET  /health                ``{"status": "ok", "pid": PID}``
    GET  /stats                 requests answered so far, by kind

::

    python bench/minimal_upstream.py --host 127.0.0.1 --port 9000 [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

import httptools

MODEL = "bench-model"
CREATED = int(time.time())
COMPLETION_ID = "chatcmpl-bench0000000000000000000000"


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _response(status: bytes, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: ",
            content_type,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: ",
            b"keep-alive" if keep_alive else b"close",
            b"\r\n\r\n",
            body,
        ]
    )


_USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
COMPLETION_BODY = _json(
    {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a benchmark reply."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }
)
MODELS_BODY = _json(
    {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}],
    }
)
HEALTH_BODY = _json({"status": "ok", "pid": os.getpid()})


def _chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    return _json(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
    )


def _event(data: bytes) -> bytes:
    """One SSE event framed as one HTTP/1.1 chunk."""
    payload = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_STREAM_EVENTS = [
    _event(_chunk({"role": "assistant", "content": ""})),
    _event(_chunk({"content": "Hello!"})),
    _event(_chunk({"content": " This is a"})),
    _event(_chunk({"content": " benchmark reply."})),
    _event(_chunk({}, "stop")),
]
_USAGE_EVENT = _event(
    _json(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [],
            "usage": _USAGE,
        }
    )
)
_DONE_EVENT = _event(b"[DONE]") + b"0\r\n\r\n"


def _stream_head(keep_alive: bool) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\nconnection: "
        + (b"keep-alive" if keep_alive else b"close")
        + b"\r\n\r\n"
    )


STATS = {"completions": 0, "streams": 0, "other": 0}


class HTTPProtocol(asyncio.Protocol):
    """One client connection; requests are answered in order as they complete."""

    __slots__ = ("_body", "_parser", "_transport", "_url")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            self._write(_response(b"400 Bad Request", b"text/plain", b"bad request", False))
            self._close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        if path == b"/v1/chat/completions" and method == b"POST":
            self._completion(b"".join(self._body), keep_alive)
        elif method == b"GET" and path == b"/health":
            STATS["other"] += 1
            self._write(_response(b"200 OK", b"application/json", HEALTH_BODY, keep_alive))
        elif method == b"GET" and path == b"/v1/models":
            STATS["other"] += 1
            self._write(_response(b"200 OK", b"application/json", MODELS_BODY, keep_alive))
        elif method == b"GET" and path == b"/stats":
            self._write(_response(b"200 OK", b"application/json", _json(STATS), keep_alive))
        else:
            body = _json({"error": {"message": "not found", "type": "invalid_request_error"}})
            self._write(_response(b"404 Not Found", b"application/json", body, keep_alive))
        if not keep_alive:
            self._close()

    def _completion(self, body: bytes, keep_alive: bool) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            error = _json({"error": {"message": "body is not a JSON object", "type": "invalid"}})
            self._write(_response(b"400 Bad Request", b"application/json", error, keep_alive))
            return
        if request.get("stream") is not True:
            STATS["completions"] += 1
            self._write(_response(b"200 OK", b"application/json", COMPLETION_BODY, keep_alive))
            return
        STATS["streams"] += 1
        options = request.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        # Head and each event as separate writes, as an engine emitting tokens would.
        self._write(_stream_head(keep_alive))
        for event in _STREAM_EVENTS:
            self._write(event)
        if usage:
            self._write(_USAGE_EVENT)
        self._write(_DONE_EVENT)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HTTPProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"minimal upstream (pid {os.getpid()}) on http://{host}:{port}", flush=True)
    await stop.wait()
    # Exit now: waiting for clients' idle keep-alive connections would stall shutdown.
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
