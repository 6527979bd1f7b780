"""Schema migrations on SQLite: fresh, from the first revision with data, and pre-alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

from aifactory.store import Store
from aifactory.store.migrate import _config


def _at_first_revision(path: Path, drop_version_table: bool = False) -> str:
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0001")
        connection.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES (1, 'lab', '2026-01-01')")
        )
        connection.execute(
            text(
                "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, role, name, created_at) "
                "VALUES (1, 1, 'h', 'aif-', 'user', '', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO usage (tenant_id, api_key_id, model, endpoint, prompt_tokens, "
                "completion_tokens, created_at) VALUES (1, 1, 'm', 'chat', 3, 4, '2026-01-01')"
            )
        )
        if drop_version_table:
            connection.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    return url


def test_a_fresh_database_gets_every_table(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    store.create_schema()
    store.create_schema()  # idempotent
    tables = set(inspect(store.engine).get_table_names())
    assert {"usage", "limits", "counters", "audit", "functions", "alembic_version"} <= tables


def test_an_older_revision_keeps_its_data(tmp_path: Path) -> None:
    store = Store(_at_first_revision(tmp_path / "old.db"))
    store.create_schema()
    (row,) = store.usage_report(None, None, "kind")
    assert (row["tenant"], row["kind"], row["prompt_tokens"], row["completion_tokens"]) == (
        "lab",
        "tokens",
        3,
        4,
    )


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    store = Store(_at_first_revision(tmp_path / "legacy.db", drop_version_table=True))
    store.create_schema()
    columns = {c["name"] for c in inspect(store.engine).get_columns("usage")}
    assert {"kind", "node_hours", "gpu_hours"} <= columns
    assert store.usage_totals()[0].prompt_tokens == 3


def test_jobs_keep_their_handle_through_its_rename(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0004")
        connection.execute(
            text(
                "INSERT INTO jobs (id, name, spec, backend, slurm_job_id, state, reason, tasks, "
                "log_dir, submitted_at, updated_at) VALUES ('a-1', 'a', '{}', 'slurm', '4711', "
                "'pending', '', '[]', '/l', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()
    store = Store(url)
    store.create_schema()
    row = store.job("a-1")
    assert row is not None and row.handle == "4711"
    assert {i["name"] for i in inspect(store.engine).get_indexes("jobs")} >= {"ix_jobs_handle"}
    with store.engine.begin() as connection:
        command.downgrade(_config(connection), "0004")
        assert connection.execute(text("SELECT slurm_job_id FROM jobs")).scalar() == "4711"
    store.close()
