"""Roles on keys and what each may do: the one table every route checks.

- ``admin``: the site's administrator; everything, for every tenant.
- ``tenant-admin``: everything its tenant may do, plus the tenant's keys and
  the limits of those keys (within the tenant's own, which the site sets).
- ``member``: deploys, changes and deletes its tenant's services, agents,
  function pools, named functions, buckets and batch jobs, within the
  tenant's quotas; reads what the tenant runs and its usage.
- ``inference``: the data paths only: ``/v1`` models, function calls, and S3
  objects in buckets its tenant may reach.

A key may also be scoped to named services (and pools) and to named buckets;
outside them it is refused as if they did not exist.
"""

from __future__ import annotations

import enum
from typing import Final

from aifactory.errors import Forbidden

__all__ = ["ROLES", "Action", "check", "grants", "may_mint"]


class Action(enum.Enum):
    """What a route does, as far as roles are concerned."""

    INFER = "call models and functions, read and write objects"
    READ = "read what its tenant runs and its usage"
    DEPLOY = "deploy, change and delete its tenant's workloads and buckets"
    MANAGE_TENANT = "manage its tenant's keys and their limits"
    SITE = "administer the whole factory"


_GRANTS: Final[dict[str, frozenset[Action]]] = {
    "admin": frozenset(Action),
    "tenant-admin": frozenset(Action) - {Action.SITE},
    "member": frozenset({Action.INFER, Action.READ, Action.DEPLOY}),
    "inference": frozenset({Action.INFER}),
}
ROLES: Final = tuple(_GRANTS)
# Which roles may mint keys of which roles: never above their own.
_MINTS: Final[dict[str, tuple[str, ...]]] = {
    "admin": ROLES,
    "tenant-admin": ("tenant-admin", "member", "inference"),
}


def grants(role: str, action: Action) -> bool:
    """Whether ``role`` may do ``action`` (an unknown role may do nothing)."""
    return action in _GRANTS.get(role, frozenset())


def check(role: str, action: Action) -> None:
    """Returns when ``role`` may do ``action``.

    Raises:
        Forbidden: naming the role, what it lacks and which roles have it.
    """
    if grants(role, action):
        return
    having = [name for name in ROLES if action in _GRANTS[name]]
    raise Forbidden(
        f"A {role!r} key may not {action.value}.",
        fix=f"use a key with the role {' or '.join(repr(name) for name in having)}",
    )


def may_mint(role: str, minted: str) -> bool:
    """Whether a key of ``role`` may create a key of role ``minted``."""
    return minted in _MINTS.get(role, ())
