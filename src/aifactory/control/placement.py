"""Placement: which stack a service's next replica goes to, and which go first on scale-down.

A service names one ``backend``, or several ``stacks`` in order of
preference, each with a ``baseline``::

    stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 1}]

A new replica goes to the first stack below its baseline. Beyond the
baselines it is a burst replica, and it goes to the stack that can start it
soonest, by each backend's own estimate (``Backend.start_delay``: Slurm's
backfill estimate from ``sbatch --test-only``, the figure ``squeue --start``
shows; on Kubernetes, room on a node now and no Pod of ours pending for want
of it). Estimates are compared to the minute, so stacks that can all start
it about now keep the listed preference; a stack that cannot tell comes
last. A burst replica still waiting for its allocation is moved when
another of the service's stacks can now start it at least a minute sooner
(``waiting_burst``, ``move_to``): the scheduler's picture changes after the
placement. Scale-down takes replicas beyond their stack's baseline first. The
gateway routes across the replicas of every stack as one pool. A replica
preempted on one stack (lent idle HPC capacity taken back) is replaced on
another stack of the service when it has one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from aifactory.control.fleet import LiveReplica, ReplicaState
from aifactory.specs import Deployable, Service

__all__ = [
    "burst_stacks",
    "move_to",
    "place",
    "stacks_of",
    "surplus_first",
    "waiting_burst",
]

# Start estimates this close count as the same, and the listed preference decides.
_SAME_START_S = 60.0
# A replica younger than this is starting as usual, not waiting.
_SETTLING_S = 20.0


def stacks_of(spec: Deployable, default: str) -> tuple[str, ...]:
    """Every backend ``spec``'s replicas may run on, the preferred first."""
    if isinstance(spec, Service) and spec.stacks:
        return tuple(share.stack for share in spec.stacks)
    return (spec.backend or default,)


def burst_stacks(
    spec: Deployable, replicas: Iterable[LiveReplica], default: str, avoid: str = ""
) -> list[str]:
    """The stacks a new replica of ``spec`` may burst to, in the listed order.

    Empty when a stack is below its baseline: the new replica goes there,
    whatever the estimates say. ``avoid`` is a stack that just took a
    replica back (preemption): another of the service's stacks is used when
    it has one.
    """
    stacks = stacks_of(spec, default)
    others = [s for s in stacks if s != avoid] or list(stacks)
    if isinstance(spec, Service) and _below_baseline(spec, replicas, others):
        return []
    return others


def place(
    spec: Deployable,
    replicas: Iterable[LiveReplica],
    default: str,
    avoid: str = "",
    delays: Mapping[str, float | None] | None = None,
) -> str:
    """The stack for a new replica of ``spec``, given its live ``replicas``.

    ``delays`` holds each burst stack's estimate of seconds until it could
    start the replica (None: cannot tell); without one a burst goes to the
    first stack listed.
    """
    replicas = list(replicas)
    stacks = stacks_of(spec, default)
    others = [s for s in stacks if s != avoid] or list(stacks)
    if isinstance(spec, Service):
        below = _below_baseline(spec, replicas, others)
        if below:
            return below
    estimates = delays or {}

    def soonest(stack: str) -> tuple[bool, float, int]:
        delay = estimates.get(stack) if estimates else 0.0
        if delay is None:
            return (True, 0.0, others.index(stack))
        return (False, delay // _SAME_START_S, others.index(stack))

    return min(others, key=soonest)


def _below_baseline(spec: Service, replicas: Iterable[LiveReplica], stacks: list[str]) -> str:
    counts = Counter(r.backend for r in replicas)
    for share in spec.stacks:
        if share.stack in stacks and counts[share.stack] < share.baseline:
            return share.stack
    return ""


def surplus_first(spec: Deployable, replicas: Sequence[LiveReplica]) -> list[LiveReplica]:
    """``replicas`` in the order scale-down takes them.

    Burst replicas (beyond their stack's baseline) go first, then replicas
    not ready yet, then the newest.
    """
    baselines = {s.stack: s.baseline for s in spec.stacks} if isinstance(spec, Service) else {}
    kept: set[str] = set()
    for stack, baseline in baselines.items():
        # Within a stack, the baseline is made of its ready, oldest replicas.
        here = sorted(
            (r for r in replicas if r.backend == stack),
            key=lambda r: (r.state is not ReplicaState.READY, r.created_monotonic),
        )
        kept.update(r.id for r in here[:baseline])
    return sorted(
        replicas, key=lambda r: (r.id in kept, r.state is ReplicaState.READY, -r.created_monotonic)
    )


def waiting_burst(
    spec: Deployable, replicas: Sequence[LiveReplica], now: float, clock: float
) -> LiveReplica | None:
    """The burst replica of ``spec`` that has waited for its allocation the longest, if any.

    Only replicas beyond their stack's baseline move (a baseline stays where
    it is), and only once they are past ``_SETTLING_S`` (``clock`` is
    monotonic, ``now`` wall time).
    """
    if not isinstance(spec, Service) or len(spec.stacks) < 2:
        return None
    baselines: dict[str, int] = {s.stack: s.baseline for s in spec.stacks}
    counts = Counter(r.backend for r in replicas)
    waiting = [
        r
        for r in replicas
        if r.awaiting_allocation(clock, _SETTLING_S)
        and counts[r.backend] > baselines.get(r.backend, 0)
    ]
    return max(waiting, key=lambda r: _wait(r, now), default=None)


def move_to(replica: LiveReplica, delays: Mapping[str, float | None], now: float) -> str:
    """The stack that can start ``replica`` a minute sooner than its own, or ""."""
    sooner = {
        stack: delay
        for stack, delay in delays.items()
        if stack != replica.backend and delay is not None
        and delay + _SAME_START_S < _wait(replica, now)
    }  # fmt: skip
    return min(sooner, key=lambda stack: sooner[stack], default="")


def _wait(replica: LiveReplica, now: float) -> float:
    """How long until the replica's allocation starts, by its scheduler (inf: cannot tell)."""
    return max(0.0, replica.starts_at_epoch - now) if replica.starts_at_epoch else math.inf
