"""Requests in flight per API key in this gateway, capped.

A request takes its place and gives it back (``claim``: in one ``with``
block), and taking checks and counts without an await in between: requests
of the same key interleave at every await, so a count read before one and
written after it lost places (and a ``KeyError`` on the way out) under load.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aifactory.errors import RateLimited


class KeyInFlight:
    """How many requests each API key has in flight here, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[int] = Counter()

    def __getitem__(self, key_id: int) -> int:
        return self._counts[key_id]

    @contextmanager
    def claim(self, key_id: int) -> Iterator[None]:
        """Count one request of ``key_id`` for the duration of the block.

        Raises:
            RateLimited: the key already has ``limit`` requests in flight.
        """
        self.take(key_id)
        try:
            yield
        finally:
            self.give_back(key_id)

    def take(self, key_id: int) -> None:
        """Count one request of ``key_id`` (``claim`` without a generator, for the hot path).

        Raises:
            RateLimited: the key already has ``limit`` requests in flight.
        """
        held = self._counts.get(key_id, 0)
        if held >= self.limit:
            raise RateLimited(
                f"This API key already has {held} requests in flight (limit {self.limit}).",
                fix="wait for some to finish, or raise AIFACTORY_MAX_IN_FLIGHT_PER_KEY",
                headers={"Retry-After": "1"},
            )
        self._counts[key_id] = held + 1

    def give_back(self, key_id: int) -> None:
        """Stop counting one request of ``key_id`` that ``take`` counted."""
        held = self._counts[key_id] - 1
        if held:
            self._counts[key_id] = held
        else:
            del self._counts[key_id]
