"""The limiter on one gateway: which limit refuses, what it says, and when it lets go.

The clock is the limiter's own (a number the test moves), so nothing waits
for a bucket to refill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest

from aifactory.errors import QuotaExceeded, RateLimited
from aifactory.store import Store
from aifactory.tenancy import Limiter, Principal, period_bounds

NOON = datetime(2030, 5, 14, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def principal(store: Store, key_id: int, tenant: str = "lab") -> Principal:
    return Principal(
        key_id=key_id, tenant_id=store.ensure_tenant(tenant), tenant=tenant, role="member"
    )


async def admit_and_settle(limiter: Limiter, who: Principal, tokens: int = 0) -> None:
    limiter.settle(await limiter.admit(who), tokens)


async def count_admitted(limiter: Limiter, who: Principal, tokens: int = 0) -> int:
    count = 0
    while True:
        try:
            await admit_and_settle(limiter, who, tokens)
        except RateLimited:
            return count
        count += 1
        assert count < 100, "never refused"


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_without_limits_every_request_is_admitted_and_holds_nothing(store: Store) -> None:
    async def scenario() -> None:
        limiter = Limiter(store)
        who = principal(store, 1)
        assert await limiter.admit(who) is None
        store.set_limits(who.tenant_id, None, node_hour_budget=5.0)  # not the gateway's business
        assert await Limiter(store).admit(who) is None

    run(scenario)


def test_a_keys_own_limit_binds_that_key_and_the_tenants_binds_all(store: Store) -> None:
    async def scenario() -> None:
        limiter = Limiter(store, clock=Clock())
        first, second = principal(store, 1), principal(store, 2)
        store.set_limits(first.tenant_id, None, requests_per_minute=3)
        store.set_limits(first.tenant_id, 1, requests_per_minute=1)
        assert await count_admitted(limiter, first) == 1
        with pytest.raises(RateLimited, match="API key 1 reached its limit of 1 requests"):
            await limiter.admit(first)
        # The key's refusals spent nothing of the tenant's three.
        assert await count_admitted(limiter, second) == 2
        with pytest.raises(RateLimited, match="tenant 'lab' reached its limit of 3 requests"):
            await limiter.admit(second)
        other_tenant = principal(store, 3, tenant="other")
        assert await limiter.admit(other_tenant) is None

    run(scenario)


def test_a_per_minute_refusal_says_when_to_retry_and_the_bucket_refills(store: Store) -> None:
    async def scenario() -> None:
        clock = Clock()
        limiter = Limiter(store, clock=clock)
        who = principal(store, 1)
        store.set_limits(who.tenant_id, None, requests_per_minute=2)
        assert await count_admitted(limiter, who) == 2
        with pytest.raises(RateLimited) as refused:
            await limiter.admit(who)
        assert refused.value.headers["Retry-After"] == "30", "one request every 30 s"
        assert refused.value.code == "rate_limit_exceeded"
        clock.now += 30
        assert await count_admitted(limiter, who) == 1
        clock.now += 3600
        assert await count_admitted(limiter, who) == 2, "a bucket holds no more than its limit"

    run(scenario)


def test_tokens_per_minute_count_what_requests_used(store: Store) -> None:
    async def scenario() -> None:
        clock = Clock()
        limiter = Limiter(store, clock=clock)
        who = principal(store, 1)
        store.set_limits(who.tenant_id, None, tokens_per_minute=600)
        # Tokens are known afterwards: the request that crosses the limit still runs.
        assert await count_admitted(limiter, who, tokens=250) == 3
        with pytest.raises(RateLimited, match="600 tokens per minute") as refused:
            await limiter.admit(who)
        assert int(refused.value.headers["Retry-After"]) >= 1
        clock.now += 60
        assert await count_admitted(limiter, who, tokens=250) == 2, "750 spent, 600 back: 450 left"

    run(scenario)


def test_a_spent_budget_is_a_quota_error_until_the_next_period(store: Store) -> None:
    async def scenario() -> None:
        clock = Clock()
        who = principal(store, 1)
        store.set_limits(who.tenant_id, None, token_budget=100, period="day")
        limiter = Limiter(store, clock=clock)
        assert await count_admitted(limiter, who, tokens=50) == 2
        with pytest.raises(QuotaExceeded) as refused:
            await limiter.admit(who)
        exc = refused.value
        assert exc.code == "insufficient_quota" and exc.status_code == 429
        assert "resets at 2030-05-15 00:00 UTC" in str(exc)
        assert exc.headers["Retry-After"] == str(12 * 3600), "seconds until midnight"
        # The same gateway finds a fresh budget at midnight, and so does one started tomorrow.
        clock.now = NOON + 12 * 3600
        assert await count_admitted(limiter, who, tokens=50) == 2
        # By tomorrow this gateway has long paid what it spent (a debt is paid in
        # the background: a gateway started in the same instant may not see it yet).
        await limiter.stop()
        tomorrow = Limiter(store, clock=Clock(NOON + 86_400))
        assert await count_admitted(tomorrow, who, tokens=50) == 0, "the day's budget is spent"

    run(scenario)


def test_a_finished_request_gives_its_concurrency_slot_back(store: Store) -> None:
    async def scenario() -> None:
        limiter = Limiter(store, clock=Clock())
        who = principal(store, 1)
        store.set_limits(who.tenant_id, None, concurrent_requests=2)
        held = [await limiter.admit(who), await limiter.admit(who)]
        with pytest.raises(RateLimited, match="already has 2 requests in flight") as refused:
            await limiter.admit(who)
        assert refused.value.headers["Retry-After"] == "1"
        limiter.settle(held.pop(), 0)
        held.append(await limiter.admit(who))
        for admission in held:
            limiter.settle(admission, 0)
        again = [await limiter.admit(who), await limiter.admit(who)]
        assert all(again), "both settled slots are free again"

    run(scenario)


def test_a_refused_request_spends_no_other_limit(store: Store) -> None:
    async def scenario() -> None:
        limiter = Limiter(store, clock=Clock())
        who = principal(store, 1)
        store.set_limits(who.tenant_id, None, requests_per_minute=5, concurrent_requests=1)
        held = await limiter.admit(who)
        for _ in range(10):
            with pytest.raises(RateLimited, match="in flight"):
                await limiter.admit(who)
        limiter.settle(held, 0)
        assert await count_admitted(limiter, who) == 4, "the ten refusals took no request"

    run(scenario)


@pytest.mark.parametrize(
    ("period", "moment", "start", "end"),
    [
        ("day", "2030-05-14T12:34:56", "2030-05-14T00:00:00", "2030-05-15T00:00:00"),
        ("month", "2030-05-14T12:34:56", "2030-05-01T00:00:00", "2030-06-01T00:00:00"),
        ("month", "2030-12-31T23:59:59", "2030-12-01T00:00:00", "2031-01-01T00:00:00"),
        ("day", "2032-02-29T00:00:00", "2032-02-29T00:00:00", "2032-03-01T00:00:00"),
    ],
)
def test_budget_periods_are_utc_days_and_months(
    period: str, moment: str, start: str, end: str
) -> None:
    def unix(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    assert period_bounds(period, unix(moment)) == (unix(start), unix(end))
