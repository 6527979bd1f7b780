"""The store's usage ledger: rows in, sums out, on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aifactory.store import Store, UsageBucket, UsageTotal

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def tenants(store: Store) -> dict[str, int]:
    return {name: store.ensure_tenant(name) for name in ("biology", "physics")}


def row(tenant_id: int, at: datetime = T0, **fields: Any) -> dict[str, Any]:
    base = {"tenant_id": tenant_id, "model": "smol", "endpoint": "chat", "created_at": at}
    return base | fields


def test_token_totals_count_requests_per_tenant_and_model(
    store: Store, tenants: dict[str, int]
) -> None:
    physics, biology = tenants["physics"], tenants["biology"]
    store.add_usage(
        [
            row(physics, prompt_tokens=10, completion_tokens=5, entries=3),
            row(physics, prompt_tokens=1, completion_tokens=1),
            row(physics, model="big", prompt_tokens=100),
            row(biology, prompt_tokens=7),
            # Not tokens: an allocation's node-hours are no request.
            row(physics, kind="allocation", model="chat", endpoint="replica", node_hours=2.0),
        ]
    )
    assert store.usage_totals() == [
        UsageTotal("biology", "smol", 1, 7, 0),
        UsageTotal("physics", "big", 1, 100, 0),
        UsageTotal("physics", "smol", 4, 11, 6),
    ]


def test_totals_since_a_time_leave_older_rows_out(store: Store, tenants: dict[str, int]) -> None:
    physics = tenants["physics"]
    store.add_usage(
        [
            row(physics, T0 - timedelta(days=1), prompt_tokens=1000),
            row(physics, T0, prompt_tokens=3),
        ]
    )
    assert [t.prompt_tokens for t in store.usage_totals(since=T0)] == [3]
    assert store.usage_sum(physics, T0, "prompt_tokens") == 3
    assert store.usage_sum(physics, T0 - timedelta(days=2), "prompt_tokens") == 1003
    assert store.usage_sum(tenants["biology"], T0, "prompt_tokens") == 0


def test_the_report_sums_every_quantity_by_the_asked_dimension(
    store: Store, tenants: dict[str, int]
) -> None:
    physics = tenants["physics"]
    key = store.add_key(physics, "h" * 64, "aif-abc", "user", "")
    store.add_usage(
        [
            row(physics, api_key_id=key, prompt_tokens=10, completion_tokens=2),
            row(physics, T0 + timedelta(days=1), prompt_tokens=5),
            row(physics, kind="function", model="fn", calls=4, seconds=1.5),
            row(physics, kind="objects", model="bucket", bytes_in=100, bytes_out=50),
            row(physics, kind="allocation", node_hours=0.5, gpu_hours=2.0),
            row(tenants["biology"], prompt_tokens=99),
        ]
    )
    by_kind = {r["kind"]: r for r in store.usage_report(physics, None, "kind")}
    assert set(by_kind) == {"tokens", "function", "objects", "allocation"}
    assert (by_kind["tokens"]["entries"], by_kind["tokens"]["prompt_tokens"]) == (2, 15)
    assert (by_kind["function"]["calls"], by_kind["function"]["seconds"]) == (4, 1.5)
    assert (by_kind["objects"]["bytes_in"], by_kind["objects"]["bytes_out"]) == (100, 50)
    assert (by_kind["allocation"]["node_hours"], by_kind["allocation"]["gpu_hours"]) == (0.5, 2.0)

    by_key = {r["key"]: r["prompt_tokens"] for r in store.usage_report(physics, None, "key")}
    assert by_key == {key: 10, 0: 5}, "rows no key acted for are summed under 0"
    by_day = [(r["day"], r["prompt_tokens"]) for r in store.usage_report(physics, T0, "day")]
    assert by_day == [("2030-05-01", 10), ("2030-05-02", 5)]
    everyone = store.usage_report(None, None, "model")
    assert {r["tenant"] for r in everyone} == {"biology", "physics"}


def test_buckets_sum_tokens_per_interval_tenant_and_model(
    store: Store, tenants: dict[str, int]
) -> None:
    physics, biology = tenants["physics"], tenants["biology"]
    start = int(T0.timestamp())  # a whole minute
    store.add_usage(
        [
            row(physics, T0 + timedelta(seconds=5), prompt_tokens=1, completion_tokens=2),
            row(physics, T0 + timedelta(seconds=59), prompt_tokens=3, completion_tokens=4),
            row(physics, T0 + timedelta(seconds=61), prompt_tokens=10),
            row(biology, T0 + timedelta(seconds=30), prompt_tokens=7),
            row(physics, T0 - timedelta(hours=1), prompt_tokens=1000),
            row(physics, T0, kind="function", model="fn", calls=1),
        ]
    )
    assert store.usage_buckets(T0, 60) == [
        UsageBucket(start, "biology", "smol", 1, 7, 0),
        UsageBucket(start, "physics", "smol", 2, 4, 6),
        UsageBucket(start + 60, "physics", "smol", 1, 10, 0),
    ]
    assert [b.tenant for b in store.usage_buckets(T0, 60, tenant_id=biology)] == ["biology"]


def test_nothing_to_add_writes_nothing(store: Store, tenants: dict[str, int]) -> None:
    store.add_usage([])
    assert store.usage_totals() == []
