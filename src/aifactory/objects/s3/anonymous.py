"""Unsigned requests: public reads only, a few per second per client address.

No limiter of the code base fits (the tenancy limits lease slices of
counters kept in the store, per tenant or key; an address is neither), so
this is a token bucket per address, in memory: each server process admits
``rate`` requests per second per address, in bursts of up to twice that.
Addresses come from the socket (the S3 listener trusts no proxy headers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aifactory.objects.errors import S3Error

__all__ = ["READS", "AnonymousLimit"]

# What an unsigned request may do; every write needs a key.
READS = frozenset({"GetObject", "HeadObject", "ListObjects", "ListObjectsV2", "HeadBucket"})
_MAX_ADDRESSES = 100_000


class AnonymousLimit:
    """A token bucket per client address.

    Args:
        rate: Requests per second each address may make (0: none).
        clock: Seconds, monotonic.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, 2 * rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, operation: str, address: str) -> None:
        """Return when an unsigned ``operation`` from ``address`` may go on.

        Raises:
            S3Error: AccessDenied for anything but a read, or when anonymous
                reads are off; SlowDown (503) when the address is over its rate.
        """
        if operation not in READS or self._rate <= 0:
            raise S3Error(
                "AccessDenied",
                "Anonymous requests may only read public buckets and objects.",
                fix="sign requests with the S3 pair shown by `aifactory keys create`",
            )
        now = self._clock()
        tokens, at = self._buckets.get(address, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            wait = (1 - tokens) / self._rate
            error = S3Error(
                "SlowDown",
                f"Anonymous reads are limited to {self._rate:g} per second per address.",
                fix="retry later, or sign requests with a key",
            )
            error.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
            raise error
        if len(self._buckets) >= _MAX_ADDRESSES:
            self._forget_idle(now)
        self._buckets[address] = (tokens - 1, now)

    def _forget_idle(self, now: float) -> None:
        """Drop addresses whose bucket has refilled (they start full again anyway)."""
        refill_s = self._burst / self._rate
        self._buckets = {a: v for a, v in self._buckets.items() if now - v[1] < refill_s}
        if len(self._buckets) >= _MAX_ADDRESSES:
            self._buckets.clear()
