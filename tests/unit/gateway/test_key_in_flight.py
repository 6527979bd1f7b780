"""The per-key count of requests in flight, under interleaved requests."""

from __future__ import annotations

import asyncio
import random

import pytest

from aifactory.errors import RateLimited
from aifactory.gateway.in_flight import KeyInFlight


def test_interleaved_requests_never_pass_the_cap_and_all_give_their_place_back() -> None:
    in_flight = KeyInFlight(limit=5)
    seen: list[int] = []
    refused = 0

    async def request(key_id: int) -> None:
        nonlocal refused
        await asyncio.sleep(random.random() / 100)
        try:
            with in_flight.claim(key_id):
                seen.append(in_flight[key_id])
                await asyncio.sleep(random.random() / 100)  # admission, proxying: others run
                seen.append(in_flight[key_id])
        except RateLimited:
            refused += 1

    async def scenario() -> None:
        await asyncio.gather(*(request(key_id) for _ in range(100) for key_id in (1, 2)))

    asyncio.run(scenario())
    assert max(seen) == 5 and refused > 0
    assert in_flight[1] == in_flight[2] == 0


def test_a_failing_request_gives_its_place_back() -> None:
    in_flight = KeyInFlight(limit=1)
    with pytest.raises(ValueError), in_flight.claim(7):
        raise ValueError("the upstream failed")
    with in_flight.claim(7), pytest.raises(RateLimited, match="limit 1"), in_flight.claim(7):
        pass
    assert in_flight[7] == 0
