"""HTTP/1.1 limits below the apps: header size and count, read timeouts, connections.

uvicorn offers ``limit_concurrency`` (connections and requests at once; more
get a 503) and ``timeout_keep_alive`` (idle time between requests), and both
are used as they are. For headers it has only ``h11_max_incomplete_event_size``,
which applies to the h11 parser alone, and it has no read timeout at all: a
connection that sends half a request is held for ever. h11 costs about twice
the CPU of httptools per request (FACTS), so the listeners keep httptools and
this subclass of uvicorn's httptools protocol adds what is missing:

- header block (request line and headers) over ``max_header_bytes``, or more
  than ``max_headers`` fields: 431, and the connection closes. Bytes of a
  header block still incomplete count too, so an unterminated header is cut
  off at the limit, not buffered whole.
- headers not complete ``header_timeout_s`` after the request's first byte
  (or after the connection opened): 408 (a connection that sent nothing is
  just closed). The deadline does not move as bytes trickle in.
- no body byte for ``body_timeout_s`` while the app waits for the body: 408.
  Time the app is not reading (flow control paused reading, or an
  ``Expect: 100-continue`` not yet answered) does not count.

Measured per request on a 2-core machine with a trivial app: see the README.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aifactory.config import Settings

__all__ = ["HttpLimits", "uvicorn_options"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """The limits of one HTTP listener (each field is the setting of the same name)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: int = 5
    max_connections: int = 4096

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        """The limits the settings give."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            max_connections=settings.max_connections,
        )


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.Config`` that apply ``limits`` (httptools, with limits)."""
    protocol = type("LimitedHttpToolsProtocol", (_LimitedHttpToolsProtocol,), {"limits": limits})
    return {
        "http": protocol,
        "ws": "none",  # no route takes a WebSocket; an upgrade stays a plain request
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": limits.keep_alive_timeout_s,
    }


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request over a limit."""


class _LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the request being received that arrived while its header
        # block was incomplete (a complete block is measured when complete).
        self._unparsed_bytes = 0
        self._in_headers = False
        self._in_body = False
        self._completed_in_feed = False
        self._feed_bytes = 0  # the size of the chunk being parsed
        self._begun_in_feed = False  # the request being parsed began in that chunk
        self._refusal: tuple[int, str] | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._header_deadline
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._completed_in_feed = self._begun_in_feed = False
        self._feed_bytes = len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_headers:
            # A chunk that also ended the previous request is not counted:
            # where the new request began in it is unknown.
            if not self._completed_in_feed:
                self._unparsed_bytes += len(data)
                if self._unparsed_bytes > self.limits.max_header_bytes:
                    self._refuse(431, self._too_many_header_bytes())
                    return
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._header_deadline
                )
        elif self._in_body:
            self._body_seen_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout_s, self._body_deadline
                )

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._begun_in_feed = True
        self._unparsed_bytes = 0

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        # Checked once here rather than per header: parsing one received
        # chunk buffers at most the chunk, and longer blocks were cut off
        # in data_received while incomplete.
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            self._refusal = (431, f"The request has more than {limits.max_headers} headers.")
            raise _Refused
        # A block that began in this chunk is no larger than the chunk (the usual case).
        small = self._begun_in_feed and self._feed_bytes <= limits.max_header_bytes
        if not small and self._header_block_bytes() > limits.max_header_bytes:
            self._refusal = (431, self._too_many_header_bytes())
            raise _Refused
        self._in_headers = False
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._completed_in_feed = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused: with our status when a limit refused it."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            status, reason = self._refusal
            self._refusal = None
            self._refuse(status, reason)

    # limits

    def _header_block_bytes(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _too_many_header_bytes(self) -> str:
        return f"The request line and headers are larger than {self.limits.max_header_bytes} bytes."

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits behind a response still being sent.
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._header_deadline
            )
        elif self._in_headers:
            self._refuse(
                408, f"The request headers did not arrive within {self.limits.header_timeout_s} s."
            )
        elif not self.transport.is_closing():
            self.transport.close()

    def _body_deadline(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or (
            self.cycle is not None and self.cycle.waiting_for_100_continue
        ):
            self._body_seen_at = now
        idle_s = now - self._body_seen_at
        if idle_s < self.limits.body_timeout_s:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s - idle_s, self._body_deadline
            )
            return
        self._refuse(
            408, f"No byte of the request body arrived for {self.limits.body_timeout_s} s."
        )

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` where no other response is under way, and close the connection."""
        logger.info("refused a request from %s: %s", self.client, reason)
        if self._in_body:
            answer = not self.cycle.response_started
        else:  # the cycle, if any, is the previous request's
            answer = self.cycle is None or self.cycle.response_complete
        if answer:
            phrase = http.HTTPStatus(status).phrase
            body = f"{reason}\n".encode()
            head = [f"HTTP/1.1 {status} {phrase}\r\n".encode()]
            head += [
                name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
            ]
            head += [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()
