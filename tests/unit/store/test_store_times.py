"""Every time the store reads back is an aware UTC datetime, whatever the database.

SQLite keeps no offset and PostgreSQL answers in its session's time zone;
the API serialises these times as they come, so a naive one reads as local
time in a browser. ``check_every_time_reads_back_in_utc`` runs on PostgreSQL
too (tests/integration/test_postgres.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import DateTime, select, text

from aifactory.store import LineageEdge, Store
from aifactory.store.tables import Base

TOKYO = timezone(timedelta(hours=9))
# One moment, written in Tokyo's time: it must read back as the same moment, in UTC.
MOMENT = datetime(2030, 5, 1, 21, 0, 0, tzinfo=TOKYO)
IN_UTC = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def _a_row_in_every_table_with_times(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    key_id = store.add_key(tenant, "h" * 64, "aif-abc", "member", "", MOMENT)
    store.revoke_key(key_id)
    store.add_bucket("data", tenant)
    store.add_service("chat", {"name": "chat"}, tenant)
    store.add_replica(id="r1", service="chat", backend="local", state="ready")
    store.add_usage([{"tenant_id": tenant, "model": "m", "endpoint": "chat", "created_at": MOMENT}])
    store.add_job(id="j1", name="train", spec={}, backend="slurm", submitted_at=MOMENT)
    store.update_job("j1", started_at=MOMENT, ended_at=MOMENT)
    store.add_function(name="square", target="maths:square", pool="cpu")
    store.add_call(id="c1", function="square", status="done", finished_at=MOMENT)
    store.set_limits(tenant, None, requests_per_minute=1)
    store.set_quotas(tenant, cpus=4)
    store.add_audit(actor_tenant="ops", action="keys.create", target="key 1")
    store.add_batch_file(
        id="file-1", tenant_id=tenant, filename="in.jsonl", purpose="batch", bytes=1, lines=1,
        bucket="batches-physics", key="files/file-1.jsonl", created_at=MOMENT,
    )  # fmt: skip
    store.add_batch(
        id="batch_1", tenant_id=tenant, endpoint="/v1/embeddings", model="m", service="s",
        backend="local", input_file_id="file-1", completion_window="24h", status="validating",
        created_at=MOMENT, updated_at=MOMENT,
    )  # fmt: skip
    where = {"kind": "dataset", "bucket": "data", "prefix": ""}
    store.save_catalog_entry(tenant, "wiki", where, "private", [], {"title": "W"}, [], "w")
    store.add_response("resp_1", tenant, {"id": "resp_1"}, [])
    store.add_lineage([LineageEdge(tenant, "wiki", 1, "used", "job", "j1", tenant, "spec")])


def _stored_as(column_type: Any) -> Any:
    return getattr(column_type, "impl", column_type)  # a TypeDecorator's underlying type


def check_every_time_reads_back_in_utc(store: Store) -> None:
    """Write a row in every table that has times, then read each of them back."""
    _a_row_in_every_table_with_times(store)
    checked = 0
    with store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(_stored_as(c.type), DateTime)]
            if not columns:
                continue
            checked += len(columns)
            rows = connection.execute(select(*columns)).all()
            assert rows, f"no row in {table.name}"
            for row in rows:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    where = f"{table.name}.{column.name}"
                    assert value.utcoffset() == timedelta(0), f"{where} read back as {value!r}"
                    assert value.tzinfo is UTC, f"{where} read back as {value!r}"
    assert checked, "found no time columns"
    key = store.key_by_hash("h" * 64)
    assert key is not None and key.expires_at == IN_UTC
    listed = store.list_keys()[0]
    assert listed["expires_at"] == "2030-05-01T12:00:00+00:00"
    assert listed["created_at"].endswith("+00:00")
    job = store.job("j1")
    assert job is not None and (job.submitted_at, job.started_at) == (IN_UTC, IN_UTC)
    assert store.audit()[0].at.isoformat().endswith("+00:00")
    bucket = store.bucket("data")
    assert bucket is not None and bucket.created_at.tzinfo is UTC


def check_a_ledger_day_is_a_utc_day_as_text(store: Store) -> None:
    """``by=day`` groups by UTC day (23:30 UTC is the next day in Tokyo), as text for JSON."""
    tenant = store.ensure_tenant("physics")
    late = datetime(2030, 5, 1, 23, 30, tzinfo=UTC)
    store.add_usage([{"tenant_id": tenant, "model": "m", "endpoint": "chat", "created_at": late}])
    assert [row["day"] for row in store.usage_report(tenant, None, "day")] == ["2030-05-01"]


def test_every_time_reads_back_in_utc(store: Store) -> None:
    check_every_time_reads_back_in_utc(store)


def test_a_ledger_day_is_a_utc_day_as_text(store: Store) -> None:
    check_a_ledger_day_is_a_utc_day_as_text(store)


def test_times_are_stored_as_before_so_older_databases_read_the_same(store: Store) -> None:
    """SQLite keeps the UTC wall time as text, as SQLAlchemy's own DateTime wrote it."""
    tenant = store.ensure_tenant("physics")
    store.add_job(id="j1", name="train", spec={}, backend="slurm", submitted_at=MOMENT)
    with store.engine.begin() as connection:
        stored = connection.execute(text("SELECT submitted_at FROM jobs")).scalar_one()
        assert stored == "2030-05-01 12:00:00.000000"
        # A row an older version wrote (a plain DateTime) reads back as the same moment.
        connection.execute(
            text(
                "INSERT INTO jobs (id, name, spec, backend, handle, state, reason, tasks, "
                "log_dir, tenant_id, run_as, submitted_at, updated_at) VALUES ('old', 'old', "
                "'{}', 'slurm', '', 'pending', '', '[]', '', :tenant, '', :at, :at)"
            ),
            {"tenant": tenant, "at": "2030-05-01 12:00:00.000000"},
        )
    old = store.job("old")
    assert old is not None and old.submitted_at == IN_UTC and old.submitted_at.tzinfo is UTC


def test_a_time_compares_with_stored_ones_as_the_same_moment(store: Store) -> None:
    """A bound parameter in another zone is converted, not compared by its wall time."""
    tenant = store.ensure_tenant("physics")
    store.add_usage([{"tenant_id": tenant, "model": "m", "endpoint": "chat", "created_at": IN_UTC}])
    just_after = (IN_UTC + timedelta(seconds=1)).astimezone(TOKYO)
    assert store.usage_totals(since=just_after) == []
    assert len(store.usage_totals(since=MOMENT)) == 1
