"""The control plane's facade: what the admin API and the CLI read, and what it refuses.

Services are deployed through the plane and taken in by one reconciler tick;
they want no replica (``min: 0``), so nothing is launched. The live replicas
the summaries count are put in the fleet by the test, their rows in the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from aifactory.config import Settings
from aifactory.control import ControlPlane, ReplicaState
from aifactory.control.fleet import LiveReplica
from aifactory.control.rotation import spec_fingerprint
from aifactory.errors import BadRequest, Conflict, NotFound, Unauthorized
from aifactory.specs import load_deployable
from aifactory.store import Store
from aifactory.tenancy import hash_key

CHAT = """
name: chat
models: [{name: smol, aliases: [chat]}]
engine: {type: openai-compatible, command: [serve, --port, "{port}"]}
replicas: {min: 0, max: 3}
autoscaling: {queue_size: 5}
"""
POOL = "kind: FunctionPool\nname: cpu\nworkers: 2\nallocations: {min: 0, max: 2}\n"


def run(
    store: Store,
    tmp_path: Path,
    scenario: Callable[[ControlPlane], Coroutine[Any, Any, None]],
    **settings: Any,
) -> None:
    async def main() -> None:
        plane = ControlPlane(Settings(data_dir=tmp_path, **settings), store)
        async with asyncio.timeout(10):
            await scenario(plane)

    asyncio.run(main())


async def deploy(plane: ControlPlane, spec: str = CHAT, tenant_id: int | None = None) -> str:
    outcome = await plane.deploy(load_deployable(spec), tenant_id)
    await plane.reconciler.tick()  # the reconciler takes the change in
    return outcome


def live(plane: ControlPlane, replica_id: str, state: ReplicaState, **fields: Any) -> LiveReplica:
    """A live replica of ``chat``, in the fleet and in the store."""
    replica = LiveReplica(replica_id, "chat", "local", state=state, **fields)
    plane.fleet.replicas[replica_id] = replica
    plane.store.add_replica(
        id=replica_id,
        service="chat",
        backend="local",
        state=state.value,
        host="node1" if replica.base_url else "",
        port=8000 if replica.base_url else 0,
        log_path=replica.log_path,
        run_as=replica.run_as,
    )
    return replica


def test_a_deploy_says_whether_it_created_changed_or_left_the_service(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        assert await deploy(plane) == "created"
        assert await deploy(plane) == "unchanged"
        assert await deploy(plane, CHAT.replace("max: 3", "max: 4")) == "updated"
        row = store.service("chat")
        assert row is not None and row.spec["replicas"] == {"min": 0, "max": 4}

    run(store, tmp_path, scenario)


def test_a_deploy_that_is_another_service_under_the_same_name_is_refused(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        await deploy(plane)
        taken = CHAT.replace("name: chat\n", "name: other\n")
        with pytest.raises(Conflict, match="'smol' is already served by service 'chat'"):
            await deploy(plane, taken)
        with pytest.raises(Conflict, match=r"is a Service; an? Agent cannot replace it"):
            await deploy(plane, "kind: Agent\nname: chat\ncommand: [python, agent.py]\n")
        with pytest.raises(Conflict, match="runs for another tenant"):
            await deploy(plane, CHAT.replace("max: 3", "max: 4"), store.ensure_tenant("lab"))
        await plane.delete("chat")
        with pytest.raises(Conflict, match="is being deleted"):
            await plane.deploy(load_deployable(CHAT.replace("max: 3", "max: 4")), None)

    run(store, tmp_path, scenario)


def test_a_service_this_machine_cannot_run_is_a_bad_request(store: Store, tmp_path: Path) -> None:
    async def scenario(plane: ControlPlane) -> None:
        greedy = CHAT + "resources: {cpus: 4}\n"
        with pytest.raises(BadRequest, match="asks for 4 CPUs") as refused:
            await plane.deploy(load_deployable(greedy), None)
        assert refused.value.param == "resources.cpus"
        with pytest.raises(BadRequest, match="runs no functions broker"):
            await plane.deploy(load_deployable(POOL), None)
        assert store.services() == []

    run(store, tmp_path, scenario, local_cpus=2)


def test_the_summary_counts_live_replicas_by_state_load_and_spec(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        await deploy(plane)
        row = store.service("chat")
        assert row is not None
        current = spec_fingerprint(row.spec)
        live(plane, "chat-1", ReplicaState.READY, in_flight=3, spec_hash=current, run_as="bob")
        live(plane, "chat-2", ReplicaState.READY, in_flight=1, spec_hash="0ld", run_as="bob")
        live(plane, "chat-3", ReplicaState.SUBMITTED, spec_hash=current, run_as="alice")
        plane.reconciler.backoff.failed("chat", "sbatch refused the job")
        (summary,) = await plane.services()
        assert summary == {
            "name": "chat",
            "kind": "Service",
            "status": "active",
            "models": ["smol"],
            "engine": "openai-compatible",
            "backend": "local",
            "wanted": 0,
            "ready": 2,
            "replica_states": {"ready": 2, "submitted": 1},
            "in_flight": 4,
            "pending_reason": summary["pending_reason"],
            "outdated": 1,
            "runs_as": ["alice", "bob"],
        }
        assert summary["pending_reason"].startswith("sbatch refused the job")

    run(store, tmp_path, scenario)


def test_describe_joins_the_stored_replicas_with_their_live_state(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        await deploy(plane)
        ready = live(plane, "chat-1", ReplicaState.READY, base_url="http://node1:8000")
        ready.in_flight = 2
        ready.ends_at_epoch = time.time() + 3600
        store.add_replica(id="chat-0", service="chat", backend="local", state="gone")
        described = await plane.describe("chat")
        assert described["spec"]["name"] == "chat"
        views = {r["id"]: r for r in described["replicas"]}
        assert views["chat-0"]["state"] == "gone" and views["chat-0"]["in_flight"] == 0
        one = views["chat-1"]
        assert (one["state"], one["address"], one["in_flight"]) == ("ready", "node1:8000", 2)
        assert 3590 <= one["time_left_s"] <= 3600
        # The fleet is what is true now; the row catches up later.
        ready.state = ReplicaState.DRAINING
        again = {r["id"]: r["state"] for r in await plane.replicas("chat")}
        assert again == {"chat-0": "gone", "chat-1": "draining"}

    run(store, tmp_path, scenario)


def test_replicas_lists_the_newest_last_up_to_the_limit(store: Store, tmp_path: Path) -> None:
    async def scenario(plane: ControlPlane) -> None:
        for n in range(5):
            store.add_replica(id=f"chat-{n}", service="chat", backend="local", state="gone")
        assert [r["id"] for r in await plane.replicas("chat", limit=2)] == ["chat-3", "chat-4"]
        assert await plane.replicas("other") == []

    run(store, tmp_path, scenario)


def test_status_says_what_a_service_waits_on(store: Store, tmp_path: Path) -> None:
    async def scenario(plane: ControlPlane) -> None:
        await deploy(plane)
        starting = live(plane, "chat-1", ReplicaState.SUBMITTED, handle="4242")
        starting.pending_reason = "Resources"
        starting.starts_at_epoch = time.time() + 120
        held = plane.fleet.hold("chat")
        assert held is not None
        status = await plane.status("chat")
        assert status["replicas"] == {
            "min": 0,
            "max": 3,
            "wanted": 0,
            "ready": 0,
            "by_state": {"submitted": 1},
        }
        assert status["queue"]["length"] == 1 and status["queue"]["limit"] == 5
        ((one),) = status["starting"]
        assert (one["id"], one["job"], one["pending_reason"]) == ("chat-1", "4242", "Resources")
        assert 110 <= one["eta_s"] <= 120
        plane.fleet.unhold(held)

    run(store, tmp_path, scenario)


def test_logs_are_the_tail_of_the_newest_or_the_named_replica(store: Store, tmp_path: Path) -> None:
    async def scenario(plane: ControlPlane) -> None:
        for n in (1, 2):
            log = tmp_path / f"chat-{n}.log"
            log.write_text("".join(f"replica {n} line {i}\n" for i in range(10)))
            store.add_replica(
                id=f"chat-{n}", service="chat", backend="local", state="ready", log_path=str(log)
            )
        assert await plane.logs("chat", lines=2) == "replica 2 line 8\nreplica 2 line 9\n"
        assert (await plane.logs("chat", "chat-1", lines=1)) == "replica 1 line 9\n"
        with pytest.raises(NotFound):
            await plane.logs("chat", "chat-9")
        with pytest.raises(NotFound):
            await plane.logs("other")

    run(store, tmp_path, scenario)


def test_asking_about_a_service_that_does_not_exist_is_not_found(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        for ask in (plane.describe, plane.status, plane.delete, plane.job_script):
            with pytest.raises(NotFound, match="'ghost' does not exist"):
                await ask("ghost")

    run(store, tmp_path, scenario)


@pytest.mark.parametrize(
    ("host", "port", "launched_at", "param"),
    [
        ("node 1", 8000, None, "host"),
        ("$(reboot)", 8000, None, "host"),
        (["node1"], 8000, None, "host"),
        ("node1", 0, None, "port"),
        ("node1", 65536, None, "port"),
        ("node1", "8000", None, "port"),
        ("node1", 8000, "yesterday", "launched_at"),
    ],
)
def test_a_malformed_registration_is_refused_before_the_replica_is_looked_up(
    store: Store, tmp_path: Path, host: Any, port: Any, launched_at: Any, param: str
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        with pytest.raises(BadRequest) as refused:
            await plane.register("chat-1", "token", host, port, launched_at)
        assert refused.value.param == param

    run(store, tmp_path, scenario)


def test_a_registration_needs_a_live_replica_and_its_own_token(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        live(plane, "chat-1", ReplicaState.SUBMITTED, token_hash=hash_key("right"))
        with pytest.raises(NotFound):
            await plane.register("chat-9", "right", "node1", 8000)
        with pytest.raises(Unauthorized):
            await plane.register("chat-1", "wrong", "node1", 8000)
        assert plane.fleet.replicas["chat-1"].state is ReplicaState.SUBMITTED

    run(store, tmp_path, scenario)


def test_the_job_script_shows_what_a_new_replica_would_run_without_starting_one(
    store: Store, tmp_path: Path
) -> None:
    async def scenario(plane: ControlPlane) -> None:
        await deploy(plane)
        script = await plane.job_script("chat")
        assert "-m aifactory.launcher" in script
        assert "--replica-id chat-XXXXXX" in script
        assert "-- serve --port" in script, "the engine's own command, last"
        assert store.replicas("chat") == [] and plane.fleet.of_service("chat") == []

    run(store, tmp_path, scenario)
