"""The store's services and replicas, on SQLite."""

from __future__ import annotations

from typing import Any

from aifactory.store import Store

SPEC: dict[str, Any] = {"name": "chat", "models": [{"name": "smol"}]}


def test_a_service_keeps_its_spec_owner_and_status(store: Store) -> None:
    tenant = store.ensure_tenant("physics")
    store.add_service("chat", SPEC, tenant)
    store.add_service("agent", {"kind": "Agent"}, None)
    row = store.service("chat")
    assert row is not None
    assert (row.spec, row.tenant_id, row.status) == (SPEC, tenant, "active")
    assert [s.name for s in store.services()] == ["agent", "chat"]
    assert store.service("missing") is None


def test_a_spec_or_status_change_shows_in_the_versions(store: Store) -> None:
    # The catalog re-parses only the services whose version changed.
    store.add_service("chat", SPEC, None)
    store.add_service("other", SPEC, None)
    before = store.service_versions()
    store.set_service_spec("chat", {**SPEC, "replicas": {"min": 2, "max": 2}})
    after_spec = store.service_versions()
    assert after_spec["chat"][1] > before["chat"][1]
    assert after_spec["other"] == before["other"]
    store.set_service_status("chat", "deleting")
    after_status = store.service_versions()
    assert after_status["chat"][0] == "deleting"
    row = store.service("chat")
    assert row is not None and row.spec["replicas"] == {"min": 2, "max": 2}


def test_services_named_returns_those_that_exist_across_chunks(store: Store) -> None:
    store.add_service("first", SPEC, None)
    store.add_service("late", SPEC, None)
    names = ["first", *(f"gone-{n}" for n in range(600)), "late"]
    assert sorted(s.name for s in store.services_named(names)) == ["first", "late"]
    assert store.services_named([]) == []


def test_a_removed_service_is_gone(store: Store) -> None:
    store.add_service("chat", SPEC, None)
    store.remove_service("chat")
    store.remove_service("chat")
    assert store.service("chat") is None and store.service_versions() == {}


def _replica(store: Store, replica_id: str, state: str = "submitted", **fields: Any) -> None:
    store.add_replica(id=replica_id, service="chat", backend="local", state=state, **fields)


def test_replicas_come_back_oldest_first_and_live_only_on_request(store: Store) -> None:
    for replica_id, state in (("r1", "ready"), ("r2", "gone"), ("r3", "failed"), ("r4", "ready")):
        _replica(store, replica_id, state)
    store.add_replica(id="x1", service="other", backend="slurm", state="ready")
    assert [r.id for r in store.replicas("chat")] == ["r1", "r2", "r3", "r4"]
    assert [r.id for r in store.replicas("chat", live_only=True)] == ["r1", "r4"]
    assert {r.id for r in store.replicas()} == {"r1", "r2", "r3", "r4", "x1"}


def test_a_replica_records_where_it_listens_and_its_fate(store: Store) -> None:
    _replica(store, "r1", handle="4242", run_as="aif-alice")
    created = store.replica("r1")
    assert created is not None
    store.update_replica("r1", state="registered", host="node1", port=8123)
    row = store.replica("r1")
    assert row is not None
    assert (row.state, row.host, row.port, row.handle, row.run_as) == (
        "registered",
        "node1",
        8123,
        "4242",
        "aif-alice",
    )
    assert row.updated_at >= created.updated_at
    assert store.replica("r9") is None


def test_marking_replicas_sets_state_and_reason_of_those_named(store: Store) -> None:
    for replica_id in ("r1", "r2", "r3"):
        _replica(store, replica_id, "ready")
    store.mark_replicas(["r1", "r3"], "gone", "control plane stopped")
    states = {r.id: (r.state, r.reason) for r in store.replicas("chat")}
    assert states == {
        "r1": ("gone", "control plane stopped"),
        "r2": ("ready", ""),
        "r3": ("gone", "control plane stopped"),
    }
