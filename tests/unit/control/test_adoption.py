"""Adoption: restored from the store at once, settled when the stack answers, never forgotten
for want of an answer, and never run twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aifactory.config import Settings
from aifactory.control import stack_watch
from aifactory.control.adoption import restore, settle
from aifactory.control.fleet import Fleet, LiveReplica, ReplicaState
from aifactory.control.reconciler import Reconciler
from aifactory.store import Store
from scripted_stack import ScriptedStack, eventually

CHAT = {
    "name": "chat",
    "models": ["m"],
    "engine": {"type": "openai-compatible", "command": ["sleep", "600", "{port}"]},
    "replicas": {"min": 3, "max": 3},
    "backend": "slurm",
}


def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    store.add_service("chat", CHAT, None)
    for replica_id, backend, state, handle in (
        ("chat-a", "slurm", "ready", "11"),
        ("chat-b", "slurm", "ready", "12"),
        ("chat-l", "local", "ready", "4242"),
        ("chat-s", "slurm", "submitted", "13"),
    ):
        store.add_replica(
            id=replica_id, service="chat", backend=backend, state=state, handle=handle,
            host="127.0.0.1" if state == "ready" else "", port=9 if state == "ready" else 0,
            token_hash="", log_path="",
        )  # fmt: skip
    return store


def test_restore_brings_back_what_a_stack_may_still_run_unconfirmed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.update_replica("chat-s", state="failed")
    fleet = Fleet()
    gone = restore(store.replicas(None, True), fleet)
    assert gone == ["chat-l"], "local processes die with the control plane"
    assert sorted(fleet.replicas) == ["chat-a", "chat-b"]
    ready = fleet.replicas["chat-a"]
    assert ready.unconfirmed and ready.state is ReplicaState.READY
    assert ready.base_url == "http://127.0.0.1:9" and ready.handle == "11"


def test_settling_keeps_the_listed_forgets_the_unlisted_and_finds_strays() -> None:
    fleet = Fleet()
    for replica_id, handle in (("chat-a", "11"), ("chat-b", "12")):
        fleet.replicas[replica_id] = LiveReplica(
            replica_id, "chat", "slurm", ReplicaState.READY, handle, unconfirmed=True
        )
    fleet.replicas["chat-new"] = LiveReplica("chat-new", "chat", "slurm")  # being submitted
    fleet.replicas["k8s-a"] = LiveReplica("k8s-a", "k8s", "kubernetes", unconfirmed=True)
    ours = {"chat-a": "11", "chat-new": "20", "chat-old": "9", "chat-b": "14"}
    settled = settle("slurm", ours, fleet)
    assert [r.id for r in settled.confirmed] == ["chat-a"]
    assert [r.id for r in settled.gone] == ["chat-b"], "its job is not the one listed"
    assert settled.strays == {"chat-old": "9", "chat-b": "14"}
    assert sorted(fleet.replicas) == ["chat-a", "chat-new", "k8s-a"]
    assert not fleet.replicas["chat-a"].unconfirmed
    assert fleet.replicas["k8s-a"].unconfirmed, "another stack's answer settles it"


def test_a_restart_during_an_outage_serves_at_once_and_runs_exactly_min_jobs_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_watch, "_FIRST_RETRY_S", 0.01)
    monkeypatch.setattr(stack_watch, "_MIN_GAP_S", 0.01)
    store = _store(tmp_path)
    # chat-a still runs; chat-b's job ended while the control plane was away; chat-s
    # (still pending then) was cancelled behind its back; job 99 is a stray of ours.
    stack = ScriptedStack({"chat-a": "11", "chat-x": "99"}, reachable=False)
    reconciler = Reconciler(Settings(data_dir=tmp_path, default_backend="slurm"), store, Fleet())
    reconciler.planner.provide(stack)  # type: ignore[arg-type]
    fleet = reconciler._fleet

    async def scenario() -> None:
        await asyncio.wait_for(reconciler.start(), 5)
        lease = fleet.acquire("chat", set())
        assert lease is not None, "a restored ready replica takes traffic at once"
        fleet.release(lease.replica_id)
        await eventually(lambda: reconciler.outages.of("slurm"))
        await reconciler.tick()
        assert "submit" not in stack.calls and "cancel" not in stack.calls
        assert sorted(fleet.replicas) == ["chat-a", "chat-b", "chat-s"], "could not ask: kept"
        assert reconciler.paused["chat"].startswith("Slurm unreachable since ")

        stack.reachable = True
        await eventually(lambda: len(stack.ours) == 3 and stack.cancelled == ["99"])
        assert "chat" not in reconciler.paused
        assert "chat-a" in fleet.replicas and not fleet.replicas["chat-a"].unconfirmed
        assert not {"chat-b", "chat-s"} & set(fleet.replicas), "gone once Slurm said so"
        await reconciler.tick()
        assert stack.calls.count("submit") == 2
        assert len(stack.ours) == 3, "exactly min = max = 3 jobs"
        await reconciler.stop()

    asyncio.run(scenario())
    states = {r.id: (r.state, r.reason) for r in store.replicas("chat")}
    assert states["chat-b"] == ("gone", "its allocation ended while slurm was not asked")
    assert states["chat-l"][0] == "gone"
    assert stack.ours == {}, "a clean stop cancels every job"
