"""Polling until something holds: the one loop every test waits with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout_s: float, last: object, context: str) -> AssertionError:
    return AssertionError(
        f"timed out after {timeout_s:.0f} s waiting for {what}; last: {last!r}\n{context}"
    )


def wait_until(
    probe: Callable[[], T],
    accept: Callable[[T], bool] = bool,
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
    context: Callable[[], str] = str,
) -> T:
    """Call ``probe`` until ``accept`` holds for its answer; that answer.

    Raises:
        AssertionError: after ``timeout_s``, naming ``what``, the last answer
            and ``context()`` (e.g. the server's log tail).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout_s, value, context())
        time.sleep(interval_s)


async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool] = bool,
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
) -> T:
    """``wait_until`` for a coroutine ``probe``, without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout_s, value, "")
        await asyncio.sleep(interval_s)
