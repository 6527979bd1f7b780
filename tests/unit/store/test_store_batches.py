"""The store's batches and batch files, each of one tenant, on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aifactory.store import Store

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def batch(store: Store, batch_id: str, tenant_id: int, minutes: int, **fields: Any) -> None:
    store.add_batch(
        id=batch_id,
        tenant_id=tenant_id,
        endpoint="/v1/chat/completions",
        model="chat",
        service="chat",
        backend="local",
        input_file_id="file-1",
        completion_window="24h",
        status=fields.pop("status", "validating"),
        created_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def test_batches_are_read_within_their_tenant_newest_first(store: Store) -> None:
    physics, chemistry = store.ensure_tenant("physics"), store.ensure_tenant("chemistry")
    for minute in range(3):
        batch(store, f"b{minute}", physics, minute)
    batch(store, "other", chemistry, 10, status="completed")
    assert [b.id for b in store.batches(physics)] == ["b2", "b1", "b0"]
    assert [b.id for b in store.batches(physics, limit=1, after="b2")] == ["b1"]
    assert store.batch("other", physics) is None
    assert store.batch("other", chemistry) is not None
    assert [b.id for b in store.batches(None, statuses=("completed",))] == ["other"]


def test_an_update_from_a_status_happens_only_while_the_batch_is_in_it(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    batch(store, "b", tenant, 0)
    assert store.update_batch("b", "validating", status="cancelling")
    assert not store.update_batch("b", "validating", status="in_progress")
    row = store.batch("b")
    assert row is not None and row.status == "cancelling"


def test_files_are_read_within_their_tenant(store: Store) -> None:
    physics, chemistry = store.ensure_tenant("physics"), store.ensure_tenant("chemistry")
    store.add_batch_file(
        id="file-1", tenant_id=physics, filename="in.jsonl", purpose="batch", bytes=3, lines=1,
        bucket="batches-physics", key="files/file-1.jsonl",
    )  # fmt: skip
    assert store.batch_file("file-1", chemistry) is None
    assert [f.id for f in store.batch_files(physics, "batch")] == ["file-1"]
    assert store.batch_files(physics, "batch_output") == []
    store.delete_batch_file("file-1")
    assert store.batch_file("file-1", physics) is None
