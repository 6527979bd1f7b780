"""Lineage edges: a set per entry, outputs settled to the version registered, a job's ledger."""

from __future__ import annotations

from datetime import timedelta

from aifactory.store import LineageEdge, Store, utcnow


def _edge(
    tenant: int, name: str, relation: str, activity: str, version: int | None = 1
) -> LineageEdge:
    return LineageEdge(tenant, name, version, relation, "job", activity, tenant, "spec")


def test_edges_are_a_set_and_outputs_settle_to_the_version_registered(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    added = store.add_lineage(
        [_edge(tenant, "raw", "used", "j1"), _edge(tenant, "raw", "used", "j1")]
    )
    assert added == 1
    store.add_lineage([_edge(tenant, "clean", "generated", "j1", version=None)])
    store.settle_generated(tenant, "clean", 3)
    store.settle_generated(tenant, "clean", 4)  # a later version was not made by j1
    (made,) = store.lineage_of(tenant, "clean")
    assert (made.edge.version, made.activity_tenant, made.job) == (3, "physics", None)
    store.delete_lineage(tenant, "clean")
    assert store.lineage_of(tenant, "clean") == []
    assert len(store.lineage_of(tenant, "raw")) == 1


def test_a_jobs_edge_carries_its_row_and_the_ledger_row_that_charged_it(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    ended = utcnow() - timedelta(minutes=1)
    store.add_job(id="train-1", name="train", spec={}, backend="slurm", tenant_id=tenant)
    store.update_job("train-1", state="completed", ended_at=ended)
    before = {"tenant_id": tenant, "kind": "allocation", "model": "train", "endpoint": "job.slurm"}
    store.add_usage([{**before, "seconds": 9.0, "created_at": ended - timedelta(hours=1)}])
    store.add_usage([{**before, "seconds": 5.0, "node_hours": 0.5, "created_at": utcnow()}])
    store.add_lineage([_edge(tenant, "raw", "used", "train-1")])
    (record,) = store.lineage_of(tenant, "raw")
    assert record.job is not None
    assert (record.job["state"], record.job["name"]) == ("completed", "train")
    (charged,) = record.job["ledger"]
    assert (charged["seconds"], charged["node_hours"]) == (5.0, 0.5)


def test_a_key_scoped_to_one_service_acts_as_that_service(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    plain = store.add_key(tenant, "a" * 64, "aif-a", "member", "")
    scoped = store.add_key(tenant, "b" * 64, "aif-b", "member", "", services=("chat",))
    assert store.key_activity(plain) == ("key", str(plain))
    assert store.key_activity(scoped) == ("service", "chat")
