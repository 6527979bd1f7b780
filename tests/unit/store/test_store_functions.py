"""The store's named functions and their calls, on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aifactory.store import Store

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_a_named_function_is_added_shared_and_removed(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    store.add_function(name="square", target="maths:square", pool="cpu", tenant_id=tenant)
    store.add_function(name="add", target="maths:add", pool="cpu", timeout_s=5.0)
    row = store.function("square")
    assert row is not None
    assert (row.target, row.pool, row.tenant_id, row.shared, row.timeout_s) == (
        "maths:square",
        "cpu",
        tenant,
        False,
        300.0,
    )
    store.update_function("square", shared=True)
    shared = store.function("square")
    assert shared is not None and shared.shared
    assert [f.name for f in store.functions()] == ["add", "square"]
    assert store.remove_function("square")
    assert not store.remove_function("square")
    assert store.function("square") is None


def test_a_call_records_its_outcome(store: Store) -> None:
    store.add_call(id="c1", function="square", status="running")
    store.update_call("c1", status="done", result="4", finished_at=T0)
    call = store.call("c1")
    assert call is not None
    assert (call.status, call.result, call.error) == ("done", "4", "")
    assert call.finished_at is not None
    assert store.call("c9") is None


def test_calls_are_listed_newest_first_by_function_and_tenant(store: Store) -> None:
    physics = store.ensure_tenant("physics")
    biology = store.ensure_tenant("biology")
    for n, (function, tenant) in enumerate(
        [("square", physics), ("add", physics), ("square", biology), ("square", physics)]
    ):
        store.add_call(
            id=f"c{n}",
            function=function,
            tenant_id=tenant,
            status="done",
            submitted_at=T0 + timedelta(seconds=n),
        )
    assert [c.id for c in store.calls()] == ["c3", "c2", "c1", "c0"]
    assert [c.id for c in store.calls("square")] == ["c3", "c2", "c0"]
    assert [c.id for c in store.calls("square", tenant_id=physics)] == ["c3", "c0"]
    assert [c.id for c in store.calls(limit=1)] == ["c3"]
