"""Limits per tenant and per key, enforced on every gateway sharing the store.

A request is admitted only if every limit of its tenant and of its key lets
it through, checked in this order (nothing is spent when one refuses)::

    token budget      spent this period < budget         else 429 insufficient_quota
    tokens per minute bucket level > 0                    else 429, Retry-After
    concurrent        a slot is free (taken now)          else 429
    requests/minute   a token is left in the bucket (taken now) else 429, Retry-After

The counters live in the shared store, but requests do not go there: each
gateway leases slices of them and spends those in memory
(``aifactory.tenancy.slices`` states the bound this keeps). When the response
is done its tokens are spent and the slot is given back, in memory. Token
counts are known only afterwards, so requests already in flight when a token
limit runs out finish (OpenAI behaves the same).

Each process holds its slots under its own name and renews them every
``_RENEW_S``; the slots of a process silent for ``_STALE_S`` (it crashed)
are given back by whichever gateway notices first. A clean stop gives every
slice and slot back.

Node- and GPU-hour budgets are checked by the control plane before it starts
an allocation for the tenant (``allocation_refusal``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from aifactory.errors import QuotaExceeded, RateLimited
from aifactory.store import LimitSet, Store
from aifactory.tenancy.keys import Principal
from aifactory.tenancy.slices import TICK_S, Allowance, Slots, all_ready, settle_all, take_all

__all__ = ["Admission", "Limiter", "period_bounds"]

logger = logging.getLogger(__name__)

_CACHE_TTL_S = 5.0
_RENEW_S = 10.0
_STALE_S = 60.0
# How long one admission may wait for leases: each lease either grants something
# or refuses, but a burst of requests shares what comes, near a limit in small slices.
_ADMIT_WAIT_S = 5.0


@dataclass(frozen=True)
class _Check:
    """One limit of one scope: the slice it is checked against, and its numbers."""

    scope: str
    kind: str  # budget, tpm, concurrent or rpm
    limits: LimitSet
    pool: Allowance | Slots


@dataclass(slots=True)
class _Plan:
    """The checks of one key while they hold: ``[since, until)`` on the limiter's clock.

    A clock set back (or a test's) sees the limits afresh rather than a plan
    from its future. ``allowances`` and ``slots`` are ``checks``' pools, split
    once here so that admitting a request asks no pool what it is.
    """

    since: float
    until: float
    checks: list[_Check]
    pools: tuple[Allowance | Slots, ...]  # the checks' pools, in their order
    allowances: tuple[Allowance, ...]
    slots: tuple[Slots, ...]


@dataclass(slots=True)
class Admission:
    """What an admitted request holds until it is settled: its plan's pools, what it reserved."""

    plan: _Plan
    costs: list[float]  # reserved out of each of ``plan.allowances``


class Limiter:
    """Admits gateway requests against the limits stored for tenants and keys."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._planning: dict[tuple[int, int], asyncio.Task[_Plan]] = {}
        self._allowances: dict[str, Allowance] = {}
        self._slots: dict[str, Slots] = {}
        self.holder = secrets.token_hex(8)  # this process, for the slots it holds
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Tick the slices; renew this process's slots and reclaim crashed processes' ones."""
        self._keeper = asyncio.create_task(self._keep(), name="limits-slices")

    async def stop(self) -> None:
        """Stop ticking and give every slice and slot back to the store."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        pools: list[Allowance | Slots] = [*self._allowances.values(), *self._slots.values()]
        for pool in pools:
            try:
                await pool.give_back()
            except Exception:  # the others reclaim slots later; a bucket refills
                logger.exception("giving back the slice %s failed", pool.name)

    async def _keep(self) -> None:
        ticks_per_renewal = round(_RENEW_S / TICK_S)
        count = 0
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
                if count % ticks_per_renewal == 0:
                    await self._renew()
            except Exception:  # a store hiccup: try again next round
                logger.exception("keeping the slices of limits failed; retrying")
            count += 1

    async def tick(self) -> None:
        """Give back what went unused for a tick, pay token debts, forget idle slices."""
        for name, allowance in list(self._allowances.items()):
            if await allowance.tick() and allowance.open == 0:
                del self._allowances[name]
        for name, slots in list(self._slots.items()):
            if await slots.tick() and slots.in_use == 0:
                del self._slots[name]

    async def _renew(self) -> None:
        counters = self._store.counters
        now = self._clock()
        await asyncio.to_thread(counters.renew, self.holder, now)
        freed = await asyncio.to_thread(counters.reclaim, now - _STALE_S)
        if freed:
            logger.warning("gave back %d in-flight slots held by a gateway that stopped", freed)

    async def _replan(self, principal: Principal) -> _Plan:
        """``_plan``, once for all the requests of a key arriving while it is made."""
        key = (principal.tenant_id, principal.key_id)
        task = self._planning.get(key)
        if task is None:
            task = asyncio.create_task(self._plan(principal))
            self._planning[key] = task
            task.add_done_callback(lambda _done: self._planning.pop(key, None))
        return await asyncio.shield(task)

    async def _plan(self, principal: Principal) -> _Plan:
        key = (principal.tenant_id, principal.key_id)
        now = self._clock()
        tenant, own = await asyncio.to_thread(
            self._store.limits_of, principal.tenant_id, principal.key_id
        )
        expires = now + _CACHE_TTL_S
        checks: list[_Check] = []
        scopes = [
            (name, limits)
            for name, limits in (
                (f"tenant {principal.tenant!r}", tenant),
                (f"API key {principal.key_id}", own),
            )
            if limits is not None and limits.any_request_limit
        ]
        for kind in ("budget", "tpm", "concurrent", "rpm"):
            for name, limits in scopes:
                if kind == "budget" and limits.token_budget is not None:
                    start, end = period_bounds(limits.period, now)
                    expires = min(expires, end)  # the next period counts on another counter
                    pool = self._allowance(_budget_counter(name, start), whole=False, spent=True)
                    pool.capacity, pool.rate = limits.token_budget, 0.0
                elif kind == "tpm" and limits.tokens_per_minute is not None:
                    pool = self._allowance(f"tpm:{name}", whole=False, spent=False)
                    pool.capacity = limits.tokens_per_minute
                    pool.rate = limits.tokens_per_minute / 60
                elif kind == "rpm" and limits.requests_per_minute is not None:
                    pool = self._allowance(f"rpm:{name}", whole=True, spent=False)
                    pool.capacity = limits.requests_per_minute
                    pool.rate = limits.requests_per_minute / 60
                elif kind == "concurrent" and limits.concurrent_requests is not None:
                    slot_name = f"inflight:{name}"
                    slots = self._slots.get(slot_name)
                    if slots is None:
                        slots = Slots(self._store, slot_name, self.holder, self._clock)
                        self._slots[slot_name] = slots
                    slots.limit = limits.concurrent_requests
                    checks.append(_Check(name, kind, limits, slots))
                    continue
                else:
                    continue
                checks.append(_Check(name, kind, limits, pool))
        plan = _Plan(
            now,
            expires,
            checks,
            tuple(c.pool for c in checks),
            tuple(c.pool for c in checks if isinstance(c.pool, Allowance)),
            tuple(c.pool for c in checks if isinstance(c.pool, Slots)),
        )
        self._plans[key] = plan
        return plan

    def _allowance(self, name: str, *, whole: bool, spent: bool) -> Allowance:
        allowance = self._allowances.get(name)
        if allowance is None:
            allowance = Allowance(self._store, name, whole=whole, spent=spent, clock=self._clock)
            self._allowances[name] = allowance
        return allowance

    def admit_now(self, principal: Principal) -> Admission | Literal[False] | None:
        """``admit`` from memory, without an await: False when it needs ``admit``.

        The gateway's hot path: nearly every request is admitted here.
        """
        plan = self._plans.get((principal.tenant_id, principal.key_id))
        if plan is None or not plan.since <= self._clock() < plan.until:
            return False
        if not plan.checks:
            return None
        if not all_ready(plan.allowances, plan.slots):
            return False
        return Admission(plan, take_all(plan.allowances, plan.slots))

    async def admit(self, principal: Principal) -> Admission | None:
        """Admit one request, or raise the refusal; None when no limit applies.

        Raises:
            QuotaExceeded: the token budget of the period is spent.
            RateLimited: a per-minute or concurrency limit is reached.
        """
        plan = self._plans.get((principal.tenant_id, principal.key_id))
        if plan is None or not plan.since <= self._clock() < plan.until:
            plan = await self._replan(principal)
        checks = plan.checks
        if not checks:
            return None
        deadline = 0.0
        while True:
            short = None
            for pool in plan.pools:
                if not pool.ready():
                    short = next(c for c in checks if c.pool is pool)
                    break
            if short is None:
                return Admission(plan, take_all(plan.allowances, plan.slots))
            now = time.monotonic()  # real waiting, whatever the clock says
            if not deadline:
                deadline = now + _ADMIT_WAIT_S
            elif now >= deadline:
                break
            await self._refill(short)
        raise RateLimited(
            "The gateway is busy leasing limits for this key; retry.",
            fix="retry shortly",
            headers={"Retry-After": "1"},
        )

    async def _refill(self, check: _Check) -> None:
        """Lease more for ``check``, or raise its refusal when the store has none left."""
        name, limits, pool = check.scope, check.limits, check.pool
        if isinstance(pool, Slots):
            if not await pool.refill() and not pool.ready():
                raise RateLimited(
                    f"The {name} already has {limits.concurrent_requests} requests in "
                    "flight, its limit.",
                    fix="wait for some to finish",
                    headers={"Retry-After": "1"},
                )
            return
        grant = await pool.refill()
        if grant.admits(pool.need):
            return
        level, now = grant.level, self._clock()
        if check.kind == "budget":
            _start, end = period_bounds(limits.period, now)
            raise QuotaExceeded(
                f"The {name} spent its token budget of {limits.token_budget} for this "
                f"{limits.period} ({pool.capacity - level:.0f} used); it resets at "
                f"{_iso(end)}.",
                fix="wait for the reset, or ask an admin to raise the budget",
                headers={"Retry-After": str(math.ceil(end - now))},
            )
        if check.kind == "tpm":
            raise RateLimited(
                f"The {name} reached its limit of {limits.tokens_per_minute} tokens per minute.",
                fix="slow down, or ask an admin to raise the limit",
                headers={"Retry-After": str(math.ceil((1 - level) / pool.rate))},
            )
        rpm = limits.requests_per_minute or 1
        raise RateLimited(
            f"The {name} reached its limit of {rpm} requests per minute.",
            fix="slow down, or ask an admin to raise the limit",
            headers={"Retry-After": str(max(1, math.ceil((1 - level) * 60 / rpm)))},
        )

    def settle(self, admission: Admission | None, tokens: int) -> None:
        """Spend the request's tokens and give its slots back (in memory)."""
        if admission is not None:
            plan = admission.plan
            settle_all(plan.allowances, admission.costs, tokens, plan.slots)


def _budget_counter(scope: str, period_start: float) -> str:
    return f"budget:{scope}:{int(period_start)}"


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """Start and end (Unix times, UTC) of the ``day`` or ``month`` containing ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromtimestamp(start.timestamp() + 86_400, UTC)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
    return start.timestamp(), end.timestamp()


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")
