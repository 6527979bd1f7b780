"""Cancelling a request whose client left, watched from ``WATCH_AFTER_S`` on.

A request is watched by a task that reads ``receive`` until the disconnect.
Most answers are done within milliseconds, where a task per request would be
wasted, and so is a timer per request (~1.5 µs, as much as the rest of the
gateway's bookkeeping). One timer ticks every ``WATCH_AFTER_S / 2`` while
requests run, and starts watching each request that was already running at
the previous tick: from 25 to 50 ms after it began. A client that left
meanwhile is seen at once when the watch starts (the server answers
``receive`` with the disconnect).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive

from aifactory.gateway.stream import Exchange

WATCH_AFTER_S = 0.05

_Request = tuple[Receive, "asyncio.Task[Any]"]


class ClientWatches:
    """The running requests of one gateway, each watched once it ran long enough."""

    def __init__(self, after_s: float = WATCH_AFTER_S) -> None:
        self._tick_s = after_s / 2
        # Requests by their exchange: begun since the last tick, and before it.
        self._young: dict[Exchange, _Request] = {}
        self._old: dict[Exchange, _Request] = {}
        self._watchers: dict[Exchange, asyncio.Task[bool]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, exchange: Exchange, receive: Receive, request: asyncio.Task[Any]) -> None:
        """Watch the request of ``exchange`` (run by ``request``) once it ran long enough."""
        self._young[exchange] = (receive, request)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick_s, self._tick)

    def saw_client_leave(self, exchange: Exchange) -> bool:
        """Whether the request was cancelled because its client left."""
        watcher = self._watchers.get(exchange)
        return (
            watcher is not None and watcher.done() and not watcher.cancelled() and watcher.result()
        )

    def remove(self, exchange: Exchange) -> None:
        """Stop watching (the request is over)."""
        if self._young.pop(exchange, None) is None and self._old.pop(exchange, None) is None:
            watcher = self._watchers.pop(exchange, None)
            if watcher is not None:
                watcher.cancel()

    def _tick(self) -> None:
        for exchange, (receive, request) in self._old.items():
            self._watchers[exchange] = asyncio.create_task(
                _cancel_when_gone(receive, exchange, request)
            )
        self._old.clear()
        self._old, self._young = self._young, self._old
        self._timer = (
            asyncio.get_running_loop().call_later(self._tick_s, self._tick) if self._old else None
        )


async def _cancel_when_gone(
    receive: Receive, exchange: Exchange, request: asyncio.Task[Any]
) -> bool:
    """Cancel ``request`` if its client disconnects before its answer ended; True if it did."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if exchange.finished:  # the server reports a finished exchange as a disconnect too
        return False
    request.cancel()
    return True
