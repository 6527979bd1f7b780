"""Lending idle HPC capacity: replicas that run as preemptible Slurm work.

A spec with ``slurm: {lend: true}`` puts its Slurm replicas on the site's
lending partition (settings, not specs). When an HPC job preempts one, its
launcher reports it with the replica's drain token; the replica drains and
its replacement is placed on another of the service's stacks for a while::

    Slurm: SIGTERM to the job ... GraceTime ... SIGKILL
    launcher: POST /internal/replicas/ID/preempted (until nothing is in flight)
    reconciler: replica -> draining; replacement on another stack (see ``avoid``)
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path

from aifactory.control.fleet import LiveReplica
from aifactory.errors import NotFound, Unauthorized
from aifactory.specs import Deployable
from aifactory.tenancy import hash_key

__all__ = ["Preemptions", "drain_token_file", "drained_replica", "is_lent"]

# How long a stack that preempted a replica is passed over for its replacements.
_AVOID_S = 300.0


def is_lent(spec: Deployable, stack: str) -> bool:
    """Whether ``spec``'s replicas on ``stack`` run as preemptible, lent work."""
    return stack == "slurm" and spec.slurm.lend


def drain_token_file(token_file: Path) -> Path:
    """Where a lent replica's drain token lies, next to its launcher token."""
    return token_file.with_suffix(".drain-token")


def drained_replica(replica: LiveReplica | None, replica_id: str, token: str) -> LiveReplica:
    """The replica a drain call names, once its drain token checks out.

    Raises:
        NotFound: no such live replica.
        Unauthorized: not the replica's drain token (an unlent replica has none).
    """
    if replica is None:
        raise NotFound(f"replica {replica_id!r} is not live.")
    if not replica.drain_token_hash or not hmac.compare_digest(
        replica.drain_token_hash, hash_key(token)
    ):
        raise Unauthorized(f"drain token for replica {replica_id!r} is not valid.")
    return replica


class Preemptions:
    """Which stack lately took a replica of each service back."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, float]] = {}

    def note(self, service: str, stack: str) -> None:
        """``stack`` preempted a replica of ``service`` now."""
        self._last[service] = (stack, time.monotonic())

    def avoid(self, service: str) -> str:
        """The stack to pass over for ``service``'s next replica, or ""."""
        stack, when = self._last.get(service, ("", 0.0))
        return stack if time.monotonic() - when < _AVOID_S else ""

    def forget(self, service: str) -> None:
        """``service`` is deleted."""
        self._last.pop(service, None)
