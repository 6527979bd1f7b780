from aifactory.control import Fleet, ReplicaState
from aifactory.control.fleet import LiveReplica
from aifactory.specs import load_service

SPEC = "name: chat\nmodels: [{name: smol, aliases: [chat]}]\nengine: {type: llama.cpp, model: x}\n"


def _fleet(*states: ReplicaState) -> Fleet:
    fleet = Fleet()
    fleet.set_services([(load_service(SPEC), 0)])
    for i, state in enumerate(states):
        fleet.replicas[f"r{i}"] = LiveReplica(
            f"r{i}", "chat", "local", state=state, base_url=f"http://h:{i}"
        )
    return fleet


def test_resolve_by_name_and_alias() -> None:
    fleet = _fleet()
    entry = fleet.resolve("chat")
    assert entry is not None and entry.service == "chat" and entry.canonical == "smol"
    assert fleet.resolve("nope") is None
    assert {m.name for m in fleet.models()} == {"smol", "chat"}


def test_least_outstanding_wins() -> None:
    fleet = _fleet(ReplicaState.READY, ReplicaState.READY)
    first = fleet.acquire("chat", set())
    second = fleet.acquire("chat", set())
    assert first and second and first.replica_id != second.replica_id
    fleet.release(first.replica_id)
    third = fleet.acquire("chat", set())
    assert third is not None and third.replica_id == first.replica_id


def test_only_ready_replicas_take_traffic() -> None:
    fleet = _fleet(ReplicaState.REGISTERED, ReplicaState.DRAINING, ReplicaState.HEALTHY)
    assert fleet.acquire("chat", set()) is None
    assert fleet.ready_count("chat") == 0


def test_failed_release_makes_replica_suspect_and_excluded() -> None:
    fleet = _fleet(ReplicaState.READY, ReplicaState.READY)
    lease = fleet.acquire("chat", set())
    assert lease is not None
    fleet.release(lease.replica_id, failed=True)
    assert fleet.ready_count("chat") == 1
    for _ in range(3):
        other = fleet.acquire("chat", set())
        assert other is not None and other.replica_id != lease.replica_id
        fleet.release(other.replica_id)


def test_exclude_skips_tried_replicas() -> None:
    fleet = _fleet(ReplicaState.READY, ReplicaState.READY)
    assert fleet.acquire("chat", {"r0", "r1"}) is None
    lease = fleet.acquire("chat", {"r0"})
    assert lease is not None and lease.replica_id == "r1"


def test_the_replica_table_follows_each_service() -> None:
    fleet = _fleet(ReplicaState.READY, ReplicaState.SUBMITTED)
    fleet.replicas["x0"] = LiveReplica("x0", "other", "local")
    assert [r.id for r in fleet.of_service("chat")] == ["r0", "r1"]
    assert [r.id for r in fleet.of_service("other")] == ["x0"]
    del fleet.replicas["r0"]
    assert fleet.replicas.pop("x0").service == "other"
    assert [r.id for r in fleet.of_service("chat")] == ["r1"] and fleet.of_service("other") == []
    assert list(fleet.replicas) == ["r1"] and len(fleet.replicas) == 1
    fleet.replicas.clear()
    assert fleet.of_service("chat") == [] and not fleet.replicas


def test_equally_loaded_replicas_take_turns_and_a_suspect_one_is_the_last_resort() -> None:
    fleet = _fleet(ReplicaState.READY, ReplicaState.READY, ReplicaState.READY)
    seen = []
    for _ in range(6):
        lease = fleet.acquire("chat", set())
        assert lease is not None
        seen.append(lease.replica_id)
        fleet.release(lease.replica_id)
    assert set(seen) == {"r0", "r1", "r2"}
    fleet.replicas["r0"].suspect = True
    fleet.replicas["r1"].suspect = True
    assert {fleet.acquire("chat", set()).replica_id for _ in range(3)} == {"r2"}  # type: ignore[union-attr]
    last = fleet.acquire("chat", {"r2"})
    assert last is not None and last.replica_id in ("r0", "r1")
