"""Limits leased in slices: exact with one gateway, within the stated bound with two.

The clock is frozen, so buckets do not refill while a test runs; ticks are
called by hand instead of waited for.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory.errors import QuotaExceeded, RateLimited
from aifactory.store import Store
from aifactory.store.counters import LEASE_SHARE
from aifactory.tenancy import Limiter, Principal
from aifactory.tenancy.limits import Admission, period_bounds

NOW = 1_000_000.0


def frozen() -> float:
    return NOW


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[Store]]:
    """Two stores on one SQLite file: two gateways sharing the counters."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first, second = Store(url), Store(url)
    first.create_schema()
    yield [first, second]
    first.close()
    second.close()


def tenant(store: Store, **limits: Any) -> Principal:
    tenant_id = store.ensure_tenant("lab")
    store.set_limits(tenant_id, None, **limits)
    return Principal(key_id=1, tenant_id=tenant_id, tenant="lab", role="member")


async def background_done() -> None:
    """Let the leases started in the background (prefetches, debts) finish."""
    current = asyncio.current_task()
    while others := [t for t in asyncio.all_tasks() if t is not current]:
        await asyncio.gather(*others, return_exceptions=True)


async def admitted(limiter: Limiter, who: Principal, tokens: int = 0) -> bool:
    try:
        admission = await limiter.admit(who)
    except (RateLimited, QuotaExceeded):
        return False
    limiter.settle(admission, tokens)
    await background_done()
    return True


async def count_until_refused(limiter: Limiter, who: Principal, tokens: int = 0) -> int:
    count = 0
    while await admitted(limiter, who, tokens):
        count += 1
        assert count < 1000, "never refused"
    return count


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_one_gateway_refuses_exactly_at_each_limit(stores: list[Store]) -> None:
    store = stores[0]

    async def scenario() -> None:
        limiter = Limiter(store, clock=frozen)
        who = tenant(store, requests_per_minute=3)
        assert await count_until_refused(limiter, who) == 3
        with pytest.raises(RateLimited, match="3 requests per minute"):
            await limiter.admit(who)

        # 7 tokens a request: 0, 7, 14 used when the three are admitted, 21 > 15 then.
        who = tenant(store, requests_per_minute=None, tokens_per_minute=15)
        limiter = Limiter(store, clock=frozen)
        assert await count_until_refused(limiter, who, tokens=7) == 3

        who = tenant(store, tokens_per_minute=None, token_budget=14, period="day")
        limiter = Limiter(store, clock=frozen)
        assert await count_until_refused(limiter, who, tokens=7) == 2
        with pytest.raises(QuotaExceeded, match="14 used"):
            await limiter.admit(who)

    run(scenario)


def test_two_gateways_admit_the_limit_exactly_between_them(stores: list[Store]) -> None:
    async def scenario() -> None:
        who = tenant(stores[0], requests_per_minute=100)
        a, b = Limiter(stores[0], clock=frozen), Limiter(stores[1], clock=frozen)
        outcomes = [await admitted((a, b)[i % 2], who) for i in range(140)]
        assert outcomes.count(True) == 100

    run(scenario)


def test_a_refusal_comes_early_by_at_most_the_other_gateways_slice(stores: list[Store]) -> None:
    async def scenario() -> None:
        limit = 100
        who = tenant(stores[0], requests_per_minute=limit)
        a, b = Limiter(stores[0], clock=frozen), Limiter(stores[1], clock=frozen)
        for _ in range(10):
            assert await admitted(a, who)
        held_by_a = limit - 10 - (await count_until_refused(b, who))
        # a's slice: at most twice what a used in this tick, and a quarter of what was left.
        assert 0 < held_by_a <= min(2 * 10, limit * LEASE_SHARE)

        await a.tick()  # a used its slice during this tick: it keeps it
        assert not await admitted(b, who)
        await a.tick()  # a whole tick unused: the slice goes back
        assert await count_until_refused(b, who) == held_by_a
        assert not await admitted(a, who), "all 100 were admitted, by a or by b"

    run(scenario)


def test_two_gateways_share_a_token_budget_exactly(stores: list[Store]) -> None:
    async def scenario() -> None:
        who = tenant(stores[0], token_budget=21, period="day")
        a, b = Limiter(stores[0], clock=frozen), Limiter(stores[1], clock=frozen)
        outcomes = [await admitted((b, a)[i % 2], who, tokens=7) for i in range(5)]
        assert outcomes == [True, True, True, False, False]

    run(scenario)


def test_concurrency_never_exceeds_the_limit_across_gateways(stores: list[Store]) -> None:
    async def scenario() -> None:
        who = tenant(stores[0], concurrent_requests=4)
        a, b = Limiter(stores[0], clock=frozen), Limiter(stores[1], clock=frozen)
        held: list[tuple[Limiter, Admission | None]] = []
        for gateway in (a, a, a, b, b, a, b):
            try:
                held.append((gateway, await gateway.admit(who)))
            except RateLimited as refusal:
                assert "4 requests in flight" in str(refusal)
        assert len(held) == 4
        for gateway, admission in held:
            if gateway is a:
                gateway.settle(admission, 0)
        with pytest.raises(RateLimited):
            await b.admit(who)  # a still leases its three slots, now unused
        await a.tick()
        await a.tick()
        assert [await b.admit(who) for _ in range(3)], "a's slots came back"

    run(scenario)


def test_a_clean_stop_gives_every_slice_back(stores: list[Store]) -> None:
    store = stores[0]

    async def scenario() -> None:
        who = tenant(
            store,
            requests_per_minute=1000,
            tokens_per_minute=100_000,
            token_budget=100_000,
            concurrent_requests=50,
        )
        limiter = Limiter(store, clock=frozen)
        for _ in range(20):
            assert await admitted(limiter, who, tokens=7)
        await limiter.stop()
        counters = store.counters
        assert counters.value("rpm:tenant 'lab'") == 1000 - 20
        assert counters.value("tpm:tenant 'lab'") == 100_000 - 20 * 7
        start, _end = period_bounds("month", NOW)
        assert counters.value(f"budget:tenant 'lab':{int(start)}") == 20 * 7, (
            "the budget counts exactly what was used"
        )
        assert counters.value("inflight:tenant 'lab'") == 0

    run(scenario)


def test_a_burst_of_one_key_is_admitted_while_the_store_has_room(stores: list[Store]) -> None:
    async def scenario() -> None:
        who = tenant(
            stores[0], requests_per_minute=100_000, tokens_per_minute=10**7, concurrent_requests=50
        )
        limiter = Limiter(stores[0], clock=frozen)

        async def one() -> None:
            admission = await limiter.admit(who)
            await asyncio.sleep(0.01)
            limiter.settle(admission, 3)

        # Forty requests wait on the same leases at once: the leases must cover them all.
        outcomes = await asyncio.gather(*(one() for _ in range(40)), return_exceptions=True)
        assert [o for o in outcomes if o is not None] == []
        await limiter.stop()

    run(scenario)


@pytest.mark.parametrize("limits", [{"requests_per_minute": 1000}, {"tokens_per_minute": 10**6}])
def test_a_slice_keeps_admitting_while_the_store_tops_it_up(
    stores: list[Store], monkeypatch: pytest.MonkeyPatch, limits: dict[str, Any]
) -> None:
    """A prefetch under way must not stall the requests its slice still covers."""
    store = stores[0]
    store_answers = threading.Event()
    leases_asked = 0
    lease = store.counters.lease

    def slow_lease(*args: Any, **kwargs: Any) -> Any:
        nonlocal leases_asked
        leases_asked += 1
        store_answers.wait(10)
        return lease(*args, **kwargs)

    async def scenario() -> None:
        who = tenant(store, **limits)
        limiter = Limiter(store, clock=frozen)
        for _ in range(8):  # used in this tick: the slice grows to cover them
            assert await admitted(limiter, who, tokens=1)
        monkeypatch.setattr(store.counters, "lease", slow_lease)
        admitted_while_leasing = 0
        while admitted_while_leasing < 3:
            admission = await asyncio.wait_for(limiter.admit(who), 2)
            limiter.settle(admission, 1)
            await asyncio.sleep(0.01)  # a prefetch reaches the store (its thread runs)
            admitted_while_leasing += leases_asked > 0
        store_answers.set()
        await background_done()
        assert leases_asked == 1, "one top-up under way at a time"

    run(scenario)


@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        ({"token_budget": 10, "period": "day"}, QuotaExceeded),
        ({"tokens_per_minute": 10}, RateLimited),
    ],
)
def test_a_limit_spent_while_its_prefetch_is_under_way_refuses_the_next_request(
    stores: list[Store], limits: dict[str, Any], refusal: type[Exception]
) -> None:
    async def scenario() -> None:
        limiter = Limiter(stores[0], clock=frozen)
        who = tenant(stores[0], **limits)
        admission = await limiter.admit(who)  # its take() starts a prefetch of the next slice
        await asyncio.sleep(0)  # the request's own awaits: that prefetch leaves for the store
        limiter.settle(admission, 10)  # the engine answered first: the whole limit is used
        with pytest.raises(refusal):
            await limiter.admit(who)

    run(scenario)


@pytest.mark.parametrize(
    "limits",
    [{"token_budget": 10, "period": "day"}, {"tokens_per_minute": 10}],
)
def test_a_debt_left_while_a_lease_was_under_way_reaches_the_store_for_the_other_gateway(
    stores: list[Store], limits: dict[str, Any]
) -> None:
    async def scenario() -> None:
        who = tenant(stores[0], **limits)
        a, b = Limiter(stores[0], clock=frozen), Limiter(stores[1], clock=frozen)
        admission = await a.admit(who)
        await asyncio.sleep(0)  # a's prefetch leaves for the store
        a.settle(admission, 10)  # the whole limit used, while that lease is under way
        await background_done()
        assert not await admitted(b, who), "b leased what a's request had already used"

    run(scenario)


@pytest.mark.parametrize(
    "limits",
    [
        {"token_budget": 60, "period": "day"},
        {"tokens_per_minute": 60},
        {"requests_per_minute": 9},
    ],
)
@pytest.mark.parametrize("seed", range(6))
def test_one_gateway_admits_exactly_while_the_limit_has_room_whatever_the_timing(
    stores: list[Store], limits: dict[str, Any], seed: int
) -> None:
    """Requests settle, leases return and ticks come in random orders; every decision is exact.

    A token request is admitted while what is left (the limit, less what settled
    requests used and open ones reserved) is above 0; a request, while one is left.
    """
    capacity = next(iter(limits.values()))
    whole = "requests_per_minute" in limits
    chance = random.Random(seed)

    async def scenario() -> None:
        limiter = Limiter(stores[0], clock=frozen)
        who = tenant(stores[0], **limits)
        used = 0.0
        open_: list[tuple[Admission, float]] = []
        for _ in range(60):
            step = chance.random()
            if step < 0.4:
                left = round(capacity - used - sum(reserved for _a, reserved in open_), 6)
                try:
                    admission = await limiter.admit(who)
                except (QuotaExceeded, RateLimited):
                    assert left < 1 if whole else left <= 0, f"refused with {left} left"
                    continue
                assert left >= 1 if whole else left > 0, f"admitted with {left} left"
                assert admission is not None
                open_.append((admission, 1.0 if whole else admission.costs[0]))
            elif step < 0.7 and open_:
                admission, reserved = open_.pop(chance.randrange(len(open_)))
                tokens = chance.randrange(15)
                limiter.settle(admission, tokens)
                used += reserved if whole else tokens
            elif step < 0.95:
                await asyncio.sleep(0)
            else:
                await limiter.tick()

    run(scenario)


def test_admit_now_admits_from_memory_once_the_plan_and_slices_are_there(
    stores: list[Store],
) -> None:
    async def scenario() -> None:
        limiter = Limiter(stores[0], clock=frozen)
        who = tenant(stores[0], requests_per_minute=100)
        assert limiter.admit_now(who) is False, "no plan yet: the store must be asked"
        limiter.settle(await limiter.admit(who), 0)
        await background_done()
        admission = limiter.admit_now(who)
        assert admission, "a plan and a slice in memory admit without an await"
        limiter.settle(admission, 0)
        free = Principal(
            key_id=2, tenant_id=stores[0].ensure_tenant("free"), tenant="free", role="member"
        )
        assert await limiter.admit(free) is None
        assert limiter.admit_now(free) is None, "no limit applies"

    run(scenario)


def test_requests_arriving_together_read_the_limits_once(
    stores: list[Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores[0]
    reads = 0
    limits_of = store.limits_of

    def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return limits_of(*args)

    async def scenario() -> None:
        who = tenant(store, requests_per_minute=100)
        monkeypatch.setattr(store, "limits_of", counted)
        limiter = Limiter(store, clock=frozen)
        admissions = await asyncio.gather(*(limiter.admit(who) for _ in range(20)))
        assert all(admissions) and reads == 1

    run(scenario)
