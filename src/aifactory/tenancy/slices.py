"""A gateway's slices of shared limits, spent in memory (as Envoy and Doorman do).

Checking the shared store on every request cost ~10 ms of CPU per request.
Instead each gateway leases a slice of an allowance from the store and admits
requests out of it in memory; the store is asked again only when the slice
runs low (in the background, before it is empty) or runs out (the request
waits for the answer), and an allowance left unused for a whole tick goes
back to the store.

The bound, per limit and per gateway:

* a slice is at most ``LEASE_SHARE`` (a quarter) of what the store had left,
  and it is topped up to at most twice what this gateway used in the last
  tick or what the requests waiting for it need (one request's worth to
  start with): small limits are leased one request at a time, and a burst
  waits for one lease, not one each; a slice keeps admitting while it is
  topped up;
* nothing is admitted that is not in some gateway's slice, so per-minute
  limits and concurrency are never exceeded; token counts are known only
  afterwards, so requests in flight when a token limit runs out finish (as
  before, and as OpenAI does);
* a request refused by the store (nothing left there) may find the other
  gateways still holding their slices: a refusal comes early by at most the
  sum of the other gateways' slices, which go back within two ticks
  (``TICK_S``) of going unused. With one gateway refusals are exact: a slice
  too small for a request goes back with the lease it waits for, so the
  store sees everything, and what it took and settled while a lease was
  under way is added to the store's answer (``Allowance.left``).

A slice that ran below zero (a request used more tokens than reserved) is
a debt, paid at once with a lease in the background (after the one under
way, if any), so the other gateways see it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aifactory.store import Grant, Store

__all__ = ["TICK_S", "Allowance", "Slots", "all_ready", "settle_all", "take_all"]

logger = logging.getLogger(__name__)

TICK_S = 1.0
_SMOOTHING = 0.2  # how fast the tokens-per-request estimate comes down


class Allowance:
    """This gateway's slice of one per-minute bucket or period budget.

    Requests (``whole``) cost one each; tokens are reserved at admission at
    the recent cost per request and corrected when the request settles.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        whole: bool,
        spent: bool,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.capacity = 0.0
        self.rate = 0.0  # refill per second; 0 for a budget
        self._store = store
        self._whole = whole
        self._spent = spent
        self._clock = clock
        self.slice = 0.0
        self.per_request = 1.0
        self.open = 0  # reservations not settled yet
        self._waiting = 0  # requests waiting for a lease to admit them
        self._fresh = False  # a lease just came back: one token request may go on its word
        self._store_left = 0.0  # what the store had left after this gateway's last lease
        self._giving = 0.0  # the slice given back by the lease under way
        self._used_now = 0.0
        self._used_before = 0.0
        self._pending: asyncio.Task[Grant] | None = None

    @property
    def need(self) -> float:
        """What the store must have left to admit a request (tokens: anything above 0)."""
        return 1.0 if self._whole else 0.0

    def left(self) -> float:
        """What the shared allowance has left, as this gateway last heard, its own slice in.

        Exact with one gateway: every take and settle since the last lease counts,
        even those made while that lease was under way.
        """
        # To a millionth of a token: slices are fractions of what is left, and
        # adding them up leaves float dust (1e-15 left is nothing left).
        return round(self._store_left + self._giving + self.slice, 6)

    def ready(self) -> bool:
        """Whether the slice admits one more request now.

        A slice that covers the request admits it, unless the store is owed
        more than the slice holds (a settled request gave tokens back to a
        slice while the store was overdrawn); one that does not admits it
        on the word of a lease just returned, if anything is left.
        """
        if self.slice >= self.per_request:
            return self._store_left + self._giving >= 0 or self.left() > 0  # cheap when not owed
        return self._fresh and self.left() > 0

    def _want(self) -> float:
        recent = 2 * max(self._used_now, self._used_before)
        return max(self.per_request * max(1, self._waiting), recent)

    def _prefetch(self) -> None:
        if self._pending is None:
            self._start(self._want()).add_done_callback(_log_failure)

    def _start(self, want: float) -> asyncio.Task[Grant]:
        """The one lease under way for this slice (a new one if none is).

        A slice that still admits a request keeps admitting while the lease
        tops it up to ``want``: giving it back first would stall every request
        for the store's round trip. One that does not (or a debt, or ``want``
        0: giving everything back) goes back with the lease.
        """
        if self._pending is None:
            keep = want > 0 and self.slice >= self.per_request
            give = 0.0 if keep else self.slice
            ask = max(0.0, want - self.slice) if keep else want
            self._pending = asyncio.create_task(self._lease(give, ask))
        return self._pending

    async def refill(self) -> Grant:
        """Wait for a fresh slice (joining a lease under way).

        Returns:
            What it granted, and what the shared allowance has left now
            (``left``): the store's answer may predate this gateway's latest
            takes and settles.
        """
        self._waiting += 1
        try:
            grant = await asyncio.shield(self._start(self._want()))
        finally:
            self._waiting -= 1
        self._fresh = not self._whole
        return Grant(grant.granted, self.left())

    async def _lease(self, give: float, want: float) -> Grant:
        self.slice -= give
        self._giving = give
        try:
            grant = await asyncio.to_thread(
                self._store.counters.lease,
                self.name,
                give=give,
                want=want,
                need=self.need,
                capacity=self.capacity,
                rate=self.rate,
                now=self._clock(),
                spent=self._spent,
            )
        except BaseException:
            self.slice += give  # nothing reached the store
            raise
        finally:
            self._giving = 0.0
            self._pending = None
        self._store_left = grant.level - grant.granted
        self.slice += grant.granted
        if self.slice < 0:
            self._prefetch()  # a debt run up while this lease was under way
        return grant

    async def tick(self) -> bool:
        """Give back a slice unused for a whole tick, pay debts; True when idle and empty."""
        self._used_before, self._used_now = self._used_now, 0.0
        idle = self._used_before == 0 and self.open == 0
        if self._pending is None and (self.slice < 0 or (idle and self.slice > 0)):
            await self._start(0.0 if idle else self._want())
        return idle and self.slice == 0 and self._pending is None

    async def give_back(self) -> None:
        """Return the whole slice (a clean stop)."""
        while self._pending is not None:  # a lease may start another to pay a debt
            await asyncio.gather(self._pending, return_exceptions=True)
        if self.slice:
            await self._start(0.0)


class Slots:
    """This gateway's lease of a concurrency limit's slots, held under its holder name."""

    def __init__(self, store: Store, name: str, holder: str, clock: Callable[[], float]) -> None:
        self.name = name
        self.limit = 0
        self._store = store
        self._holder = holder
        self._clock = clock
        self.leased = 0
        self.in_use = 0
        self.peak = 0  # the most in use since the last tick
        self._waiting = 0  # requests waiting for a lease to admit them
        self._pending: asyncio.Task[int] | None = None

    def ready(self) -> bool:
        """Whether a leased slot is free."""
        return self.in_use < self.leased

    async def refill(self) -> int:
        """Lease more slots (joining a lease under way); returns how many came."""
        self._waiting += 1
        try:
            if self._pending is None:
                count = max(self._waiting, self.leased // 2)
                self._pending = asyncio.create_task(self._acquire(count))
            return await asyncio.shield(self._pending)
        finally:
            self._waiting -= 1

    async def _acquire(self, count: int) -> int:
        try:
            granted = await asyncio.to_thread(
                self._store.counters.acquire,
                self.name,
                self.limit,
                self._holder,
                self._clock(),
                count,
            )
        finally:
            self._pending = None
        self.leased += granted
        return granted

    async def _release(self, count: int) -> None:
        self.leased -= count
        try:
            await asyncio.to_thread(self._store.counters.release, self.name, self._holder, count)
        except BaseException:
            self.leased += count
            raise

    async def tick(self) -> bool:
        """Give back the slots no request used during the last tick; True when none are left."""
        spare, self.peak = self.leased - self.peak, self.in_use
        if spare > 0 and self._pending is None:
            await self._release(spare)
        return self.leased == 0 and self._pending is None

    async def give_back(self) -> None:
        """Return every leased slot (a clean stop)."""
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        if self.leased:
            await self._release(self.leased)


def all_ready(allowances: tuple[Allowance, ...], slots: tuple[Slots, ...]) -> bool:
    """Whether every slice covers one more request and every limit has a leased slot free.

    ``Allowance.ready`` and ``Slots.ready`` of them all without a call per
    pool (``take_all`` and ``settle_all`` alike): every request of a limited
    key goes through these three, and a call costs what the check does.
    """
    for allowance in allowances:
        if allowance.slice < allowance.per_request or (
            allowance._store_left + allowance._giving < 0 and allowance.left() <= 0
        ):
            return False
    for pool in slots:  # noqa: SIM110 (not all(): a generator per request)
        if pool.in_use >= pool.leased:
            return False
    return True


def take_all(allowances: tuple[Allowance, ...], slots: tuple[Slots, ...]) -> list[float]:
    """Reserve one request's cost out of each slice and use a slot of each; returns the costs.

    A slice run below half of what it wants (``Allowance._want``) is topped
    up in the background (requests waiting have a lease under way already).
    """
    costs = []
    for allowance in allowances:
        cost = allowance.per_request
        allowance._fresh = False
        left = allowance.slice = allowance.slice - cost
        allowance._used_now += cost
        allowance.open += 1
        if left < allowance._used_now or left < allowance._used_before or 2 * left < cost:
            allowance._prefetch()
        costs.append(cost)
    for pool in slots:
        pool.in_use += 1
        if pool.in_use > pool.peak:
            pool.peak = pool.in_use
    return costs


def settle_all(
    allowances: tuple[Allowance, ...], costs: list[float], used: float, slots: tuple[Slots, ...]
) -> None:
    """A request ended having used ``used`` tokens: correct its reservations, free its slots.

    A request costs one of a ``whole`` allowance whatever it used. A token
    estimate goes up at once and down slowly: a slice admits only requests
    it can cover, so an estimate too low would let one gateway spend what
    another's debt took. A slice left below zero is a debt, paid soon so the
    other gateways see it. A slot stays leased until a tick finds it spare.
    """
    for allowance, reserved in zip(allowances, costs):  # noqa: B905 (same length: take_all's)
        allowance.open -= 1
        if allowance._whole:
            continue
        allowance.slice += reserved - used
        allowance._used_now += used - reserved
        cost = max(1.0, used)
        if cost > allowance.per_request:
            allowance.per_request = cost
        else:
            allowance.per_request += (cost - allowance.per_request) * _SMOOTHING
        if allowance.slice < 0:
            allowance._prefetch()
    for pool in slots:
        pool.in_use -= 1


def _log_failure(task: asyncio.Task[Grant]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning(
            "leasing a slice of a limit failed (retried on demand): %s", task.exception()
        )
