"""HTTP framing on both ports: floods of headers, huge headers, headers that never end.

These must be refused (a 4xx, or the connection closed) promptly and
without the server holding what was sent: accepting them is the finding.
"""

from __future__ import annotations

import pytest

from .conftest import Target
from .strategies import BIG_HEADER_BYTES, MANY_HEADERS, UNTERMINATED_HEADER_BYTES
from .wire import SLOW_S, Fuzzer, Outcome, Request, exchange, flood


def _refused(_request: Request, outcome: Outcome) -> bool:
    """A 4xx, or a connection closed without an answer, both in good time."""
    if outcome.elapsed_s > SLOW_S:
        return False
    return outcome.status is None or 400 <= outcome.status < 500


def _judge(fuzzer: Fuzzer, request: Request, outcome: Outcome) -> None:
    fuzzer.judge(request, outcome, _refused)  # a 5xx, or no answer in time, is kept there
    if outcome.status is not None and outcome.status < 400 and outcome.elapsed_s <= SLOW_S:
        fuzzer.record(request, f"accepted it: answered {outcome.status}")


@pytest.mark.parametrize("port_of", ["control plane", "S3"])
def test_header_floods(target: Target, port_of: str) -> None:
    port = target.port if port_of == "control plane" else target.s3_port
    fuzzer = target.fuzzer("http", s3=port_of == "S3")
    many = tuple((f"X-Fuzz-{i}", "v") for i in range(MANY_HEADERS))
    for request in (
        Request(f"{MANY_HEADERS} headers", "GET", "/healthz", many),
        Request("a 1 MiB header", "GET", "/healthz", (("X-Big", "a" * BIG_HEADER_BYTES),)),
    ):
        _judge(fuzzer, request, exchange(port, request))
    unterminated = Request("a 40 MiB header that never ends", "GET", "/healthz")
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    _judge(fuzzer, unterminated, flood(port, head, UNTERMINATED_HEADER_BYTES, SLOW_S))
    target.check()
