"""The usage ledger sums a second's entries per tenant, key, kind, model and endpoint."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from aifactory.store import Store
from aifactory.tenancy import UsageLedger


def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.create_schema()
    return store


def test_a_busy_second_is_one_row_per_key_and_model_counting_its_entries(tmp_path: Path) -> None:
    store = _store(tmp_path)
    tenant = store.ensure_tenant("physics")
    ledger = UsageLedger(store, flush_interval_s=60)
    for _ in range(1000):
        ledger.record(
            tenant_id=tenant, key_id=None, model="chat", endpoint="chat.completions",
            prompt_tokens=3, completion_tokens=5,
        )  # fmt: skip
    ledger.record(
        tenant_id=tenant, key_id=None, model="chat", endpoint="replica.slurm",
        kind="allocation", node_hours=0.5, source="slurm-accounting",
    )  # fmt: skip
    ledger.record(
        tenant_id=tenant, key_id=None, model="chat", endpoint="replica.slurm",
        kind="allocation", node_hours=0.25, source="control-plane",
    )  # fmt: skip
    asyncio.run(ledger.flush())
    by_kind = {row["kind"]: row for row in store.usage_report(tenant, None, "kind")}
    assert by_kind["tokens"]["entries"] == 1000
    assert (by_kind["tokens"]["prompt_tokens"], by_kind["tokens"]["completion_tokens"]) == (
        3000,
        5000,
    )
    assert by_kind["allocation"]["entries"] == 2
    assert by_kind["allocation"]["node_hours"] == 0.75
    # One row per key, model, endpoint and source.
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT count(*) FROM usage").fetchone() == (3,)
    totals = store.usage_totals()
    assert [(t.model, t.requests) for t in totals] == [("chat", 1000)]


def test_rows_a_failed_write_keeps_are_merged_into_the_next_flush(tmp_path: Path) -> None:
    store = _store(tmp_path)
    tenant = store.ensure_tenant("physics")
    ledger = UsageLedger(store, flush_interval_s=60)
    ledger.record(tenant_id=tenant, key_id=None, model="m", endpoint="e", prompt_tokens=1)
    failing = store.add_usage

    def refuse(rows: object) -> None:
        raise RuntimeError("database away")

    store.add_usage = refuse  # type: ignore[method-assign]
    asyncio.run(ledger.flush())
    store.add_usage = failing  # type: ignore[method-assign]
    ledger.record(tenant_id=tenant, key_id=None, model="m", endpoint="e", prompt_tokens=2)
    asyncio.run(ledger.flush())
    (row,) = store.usage_report(tenant, None, "model")
    assert (row["entries"], row["prompt_tokens"]) == (2, 3)


def test_record_tokens_adds_to_the_rows_record_writes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    tenant = store.ensure_tenant("physics")
    ledger = UsageLedger(store, flush_interval_s=60)
    ledger.record(
        tenant_id=tenant, key_id=None, model="chat", endpoint="chat",
        prompt_tokens=3, completion_tokens=5,
    )  # fmt: skip
    ledger.record_tokens(tenant, None, "chat", "chat", 4, 6)
    ledger.record_tokens(tenant, None, "chat", "chat", 1, 2, "abandoned")
    ledger.record(
        tenant_id=tenant, key_id=None, model="chat", endpoint="chat",
        prompt_tokens=10, completion_tokens=20, source="abandoned",
    )  # fmt: skip
    asyncio.run(ledger.flush())
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = db.execute(
            "SELECT source, entries, prompt_tokens, completion_tokens FROM usage ORDER BY source"
        ).fetchall()
    assert rows == [("", 2, 7, 11), ("abandoned", 2, 11, 22)]
