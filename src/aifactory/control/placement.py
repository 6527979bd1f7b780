"""Placement: which stack a service's next replica goes to, and which go first on scale-down.

A service names one ``backend``, or several ``stacks`` in order of
preference, each with a ``baseline``::

    stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 1}]

A new replica goes to the first stack below its baseline, else to the first
stack listed (the burst). Scale-down takes replicas beyond their stack's
baseline first. The gateway routes across the replicas of every stack as
one pool. A replica preempted on one stack (lent idle HPC capacity taken
back) is replaced on another stack of the service when it has one. Not
decided here yet: bursting to whichever stack can start a replica soonest
(Slurm's start estimate against pending Pods).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence

from aifactory.control.fleet import LiveReplica, ReplicaState
from aifactory.errors import SpecError
from aifactory.specs import Deployable, Service, load_deployable
from aifactory.store import ServiceRow

__all__ = ["place", "stacks_of", "stacks_of_rows", "surplus_first"]


def stacks_of(spec: Deployable, default: str) -> tuple[str, ...]:
    """Every backend ``spec``'s replicas may run on, the preferred first."""
    if isinstance(spec, Service) and spec.stacks:
        return tuple(share.stack for share in spec.stacks)
    return (spec.backend or default,)


def stacks_of_rows(rows: Iterable[ServiceRow], default: str) -> set[str]:
    """Every backend the stored services may run on (unreadable specs name none)."""
    names: set[str] = set()
    for row in rows:
        with contextlib.suppress(SpecError):
            names.update(stacks_of(load_deployable(dict(row.spec), row.name), default))
    return names


def place(spec: Deployable, replicas: Iterable[LiveReplica], default: str, avoid: str = "") -> str:
    """The stack for a new replica of ``spec``, given its live ``replicas``.

    ``avoid`` is a stack that just took a replica back (preemption): the
    replacement goes to another of the service's stacks when it has one.
    """
    stacks = stacks_of(spec, default)
    others = [s for s in stacks if s != avoid] or list(stacks)
    if isinstance(spec, Service):
        counts = Counter(r.backend for r in replicas)
        for share in spec.stacks:
            if share.stack in others and counts[share.stack] < share.baseline:
                return share.stack
    return others[0]


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
            key=lambda r: (r.state is not ReplicaState.READY, r.created_at),
        )
        kept.update(r.id for r in here[:baseline])
    return sorted(
        replicas, key=lambda r: (r.id in kept, r.state is ReplicaState.READY, -r.created_at)
    )
