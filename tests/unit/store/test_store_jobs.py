"""The store's batch jobs, on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aifactory.store import Store

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)


def job(store: Store, job_id: str, name: str = "train", minutes: int = 0, **fields: Any) -> None:
    store.add_job(
        id=job_id,
        name=name,
        spec={"name": name},
        backend="slurm",
        submitted_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def test_a_job_starts_pending_and_keeps_its_spec(store: Store) -> None:
    job(store, "train-1", handle="4242")
    row = store.job("train-1")
    assert row is not None
    assert (row.state, row.spec, row.handle, row.tasks) == (
        "pending",
        {"name": "train"},
        "4242",
        [],
    )
    assert store.job("train-9") is None


def test_an_update_from_a_state_happens_only_while_the_job_is_in_it(store: Store) -> None:
    # A cancel and the scheduler's end race: only the first one moves the job.
    job(store, "train-1")
    assert store.update_job("train-1", from_state="pending", state="running")
    assert not store.update_job("train-1", from_state="pending", state="cancelled")
    assert store.update_job("train-1", from_state="running", state="completed", exit_code=0)
    row = store.job("train-1")
    assert row is not None and (row.state, row.exit_code) == ("completed", 0)
    assert store.update_job("train-1", reason="kept"), "no state asked: always"
    assert not store.update_job("train-9", state="running")


def test_the_newest_job_of_a_name_wins(store: Store) -> None:
    job(store, "train-1", minutes=0)
    job(store, "train-3", minutes=2)
    job(store, "train-2", minutes=1)
    job(store, "eval-1", name="eval", minutes=5)
    newest = store.newest_job("train")
    assert newest is not None and newest.id == "train-3"
    assert store.newest_job("missing") is None


def test_jobs_are_listed_newest_first_per_tenant_and_limited(store: Store) -> None:
    physics = store.ensure_tenant("physics")
    biology = store.ensure_tenant("biology")
    for n in range(4):
        job(store, f"p-{n}", minutes=n, tenant_id=physics)
    job(store, "b-0", minutes=10, tenant_id=biology)
    assert [j.id for j in store.jobs()] == ["b-0", "p-3", "p-2", "p-1", "p-0"]
    assert [j.id for j in store.jobs(limit=2, tenant_id=physics)] == ["p-3", "p-2"]
    assert [j.id for j in store.jobs(tenant_id=biology)] == ["b-0"]
