"""One timer for every running request: watches start 25 to 50 ms in, never for quick ones."""

from __future__ import annotations

import asyncio
from typing import Any

from aifactory.gateway.client_watch import ClientWatches
from aifactory.gateway.stream import Exchange


async def _ignore(_message: Any) -> None:
    pass


def test_a_quick_request_is_never_read_and_a_long_one_is_cancelled_when_its_client_leaves() -> None:
    async def scenario() -> tuple[int, bool, float, bool]:
        watches = ClientWatches(after_s=0.1)
        reads = 0
        left = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            await left.wait()
            return {"type": "http.disconnect"}

        async def request(hold_s: float) -> tuple[bool, float]:
            exchange = Exchange(_ignore, b"id")
            task = asyncio.current_task()
            assert task is not None
            watches.add(exchange, receive, task)
            began = asyncio.get_running_loop().time()
            try:
                await asyncio.sleep(hold_s)
                return False, 0.0
            except asyncio.CancelledError:
                return watches.saw_client_leave(exchange), asyncio.get_running_loop().time() - began
            finally:
                watches.remove(exchange)

        await request(0.01)
        quick_reads = reads
        long = asyncio.create_task(request(10))
        await asyncio.sleep(0.3)
        watched = reads == 1
        left.set()
        saw_leave, after_s = await long
        return quick_reads, watched, after_s, saw_leave and watched

    quick_reads, watched, after_s, cancelled = asyncio.run(scenario())
    assert quick_reads == 0, "a request done before the watch began was read"
    assert watched and cancelled, "the long request was not watched, or not cancelled"
    assert after_s < 5


def test_the_timer_stops_when_nothing_runs() -> None:
    async def scenario() -> bool:
        watches = ClientWatches(after_s=0.02)
        exchange = Exchange(_ignore, b"id")
        task = asyncio.current_task()
        assert task is not None

        async def never() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        watches.add(exchange, never, task)
        await asyncio.sleep(0.05)  # watched by now
        watches.remove(exchange)
        await asyncio.sleep(0.1)
        return watches._timer is None and not watches._watchers

    assert asyncio.run(scenario())
