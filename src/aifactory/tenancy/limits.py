"""Limits per tenant and per key, enforced on every gateway sharing the store.

A request is admitted only if every limit of its tenant and of its key lets
it through, checked in this order (nothing is spent when one refuses)::

    token budget      spent this period < budget         else 429 insufficient_quota
    tokens per minute bucket level > 0                    else 429, Retry-After
    concurrent        a slot is free (taken now)          else 429
    requests/minute   a token is left in the bucket (taken now) else 429, Retry-After

When the response is done its tokens are spent from the tokens-per-minute
bucket and added to the budget, and the slot is given back. Token counts are
known only afterwards, so requests already in flight when a token limit runs
out finish (OpenAI behaves the same); every token is counted exactly once,
also across gateways, because the counters live in the shared store.

Each process holds its slots under its own name and renews them every
``_RENEW_S``; the slots of a process silent for ``_STALE_S`` (it crashed)
are given back by whichever gateway notices first.

Node- and GPU-hour budgets are checked by the control plane before it starts
an allocation for the tenant (``allocation_refusal``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aifactory.errors import QuotaExceeded, RateLimited
from aifactory.store import LimitSet, Store
from aifactory.tenancy.keys import Principal

__all__ = ["Admission", "Limiter", "period_bounds"]

logger = logging.getLogger(__name__)

_CACHE_TTL_S = 5.0
_RENEW_S = 10.0
_STALE_S = 60.0


@dataclass
class Admission:
    """What an admitted request holds until it is settled."""

    scopes: list[tuple[str, LimitSet]]
    slots: list[str] = field(default_factory=list)


class Limiter:
    """Admits gateway requests against the limits stored for tenants and keys."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[tuple[int, int], tuple[float, list[tuple[str, LimitSet]]]] = {}
        self.holder = secrets.token_hex(8)  # this process, for the slots it holds
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Renew this process's slots and reclaim those of crashed processes, periodically."""
        self._keeper = asyncio.create_task(self._keep_slots(), name="limits-slots")

    async def stop(self) -> None:
        """Stop renewing (slots still held are reclaimed by the others later)."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)

    async def _keep_slots(self) -> None:
        counters = self._store.counters
        while True:
            now = time.time()
            try:
                await asyncio.to_thread(counters.renew, self.holder, now)
                freed = await asyncio.to_thread(counters.reclaim, now - _STALE_S)
            except Exception:  # a store hiccup: try again next round
                logger.exception("renewing in-flight slots failed; retrying")
            else:
                if freed:
                    logger.warning(
                        "gave back %d in-flight slots held by a gateway that stopped", freed
                    )
            await asyncio.sleep(_RENEW_S)

    def _scopes(self, principal: Principal) -> list[tuple[str, LimitSet]] | None:
        """The principal's limited scopes from the cache, or None when not cached."""
        cached = self._cache.get((principal.tenant_id, principal.key_id))
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    def _load_scopes(self, principal: Principal) -> list[tuple[str, LimitSet]]:
        tenant, own = self._store.limits_of(principal.tenant_id, principal.key_id)
        scopes = [
            (name, limits)
            for name, limits in (
                (f"tenant {principal.tenant!r}", tenant),
                (f"API key {principal.key_id}", own),
            )
            if limits is not None and limits.any_request_limit
        ]
        self._cache[(principal.tenant_id, principal.key_id)] = (
            time.monotonic() + _CACHE_TTL_S,
            scopes,
        )
        return scopes

    async def admit(self, principal: Principal) -> Admission | None:
        """Admit one request, or raise the refusal; None when no limit applies.

        Raises:
            QuotaExceeded: the token budget of the period is spent.
            RateLimited: a per-minute or concurrency limit is reached.
        """
        scopes = self._scopes(principal)
        if scopes is None:  # the hot path skips the thread hop while cached
            scopes = await asyncio.to_thread(self._load_scopes, principal)
        if not scopes:
            return None
        return await asyncio.to_thread(self._admit, scopes)

    def _admit(self, scopes: list[tuple[str, LimitSet]]) -> Admission:
        counters = self._store.counters
        now = time.time()
        for name, limits in scopes:
            if limits.token_budget is not None:
                start, end = period_bounds(limits.period, now)
                spent = counters.value(_budget_counter(name, start))
                if spent >= limits.token_budget:
                    raise QuotaExceeded(
                        f"The {name} spent its token budget of {limits.token_budget} for this "
                        f"{limits.period} ({spent:.0f} used); it resets at "
                        f"{_iso(end)}.",
                        fix="wait for the reset, or ask an admin to raise the budget",
                        headers={"Retry-After": str(math.ceil(end - now))},
                    )
            if limits.tokens_per_minute is not None:
                rate = limits.tokens_per_minute / 60
                level = counters.level(f"tpm:{name}", limits.tokens_per_minute, rate, now)
                if level <= 0:
                    raise RateLimited(
                        f"The {name} reached its limit of {limits.tokens_per_minute} tokens "
                        "per minute.",
                        fix="slow down, or ask an admin to raise the limit",
                        headers={"Retry-After": str(math.ceil((1 - level) / rate))},
                    )
        admission = Admission(scopes)
        try:
            for name, limits in scopes:
                if limits.concurrent_requests is not None:
                    slot = f"inflight:{name}"
                    if not counters.acquire(slot, limits.concurrent_requests, self.holder, now):
                        raise RateLimited(
                            f"The {name} already has {limits.concurrent_requests} requests in "
                            "flight, its limit.",
                            fix="wait for some to finish",
                            headers={"Retry-After": "1"},
                        )
                    admission.slots.append(slot)
            for name, limits in scopes:
                if limits.requests_per_minute is not None:
                    rpm = limits.requests_per_minute
                    if not counters.take(f"rpm:{name}", 1, rpm, rpm / 60, now):
                        level = counters.level(f"rpm:{name}", rpm, rpm / 60, now)
                        raise RateLimited(
                            f"The {name} reached its limit of {rpm} requests per minute.",
                            fix="slow down, or ask an admin to raise the limit",
                            headers={"Retry-After": str(max(1, math.ceil((1 - level) * 60 / rpm)))},
                        )
        except RateLimited:
            self._release(admission)
            raise
        return admission

    async def settle(self, admission: Admission | None, tokens: int) -> None:
        """Spend the request's tokens and give its slots back."""
        if admission is not None:
            await asyncio.to_thread(self._settle, admission, tokens)

    def _settle(self, admission: Admission, tokens: int) -> None:
        counters = self._store.counters
        now = time.time()
        try:
            if tokens:
                for name, limits in admission.scopes:
                    if limits.tokens_per_minute is not None:
                        tpm = limits.tokens_per_minute
                        counters.spend(f"tpm:{name}", tokens, tpm, tpm / 60, now)
                    if limits.token_budget is not None:
                        start, _end = period_bounds(limits.period, now)
                        counters.add(_budget_counter(name, start), tokens)
        finally:
            self._release(admission)

    def _release(self, admission: Admission) -> None:
        for slot in admission.slots:
            self._store.counters.release(slot, self.holder)
        admission.slots.clear()


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
