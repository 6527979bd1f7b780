"""Who may use a function pool, and how: pickled code within one tenant, JSON across tenants.

A pool belongs to the tenant it was deployed for (``aif deploy --tenant T``)
and its workers run as that tenant. Pickled code and data cross only within
one tenant, so an executor (``submit``/``map``) is admitted with a key of the
pool's tenant only, administrators of other tenants included: unpickling is
code execution, in a worker as in a client. Other tenants reach a pool only
through the named functions its tenant shared, with JSON arguments and
results over HTTP. To other tenants a private pool, and every function on
it, does not exist (an administrator still sees it).

Everything here reads the store: call it from a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from aifactory.errors import Forbidden, NotFound
from aifactory.specs import load_deployable
from aifactory.store import FunctionRow, Store
from aifactory.tenancy import Action, Principal

__all__ = ["PoolOwner", "check_may_call", "code_refusal", "may_call", "pool_owner"]


@dataclass(frozen=True)
class PoolOwner:
    """A function pool and the tenant it belongs to."""

    pool: str
    tenant_id: int | None
    tenant: str
    private: bool

    def owned_by(self, caller: Principal) -> bool:
        """Whether ``caller``'s key is one of the pool's own tenant."""
        return self.tenant_id == caller.tenant_id

    def visible_to(self, caller: Principal) -> bool:
        """Whether ``caller`` sees the pool: in its scope, and if private, its tenant's."""
        return caller.reaches_service(self.pool) and (
            not self.private or caller.is_admin or self.owned_by(caller)
        )


def pool_owner(store: Store, pool: str) -> PoolOwner | None:
    """The function pool named ``pool`` and its tenant; None if there is no such pool."""
    row = store.service(pool)
    if row is None:
        return None
    spec = load_deployable(dict(row.spec), pool)
    if spec.kind != "FunctionPool":
        return None
    tenant = store.tenant_by_id(row.tenant_id) if row.tenant_id is not None else None
    return PoolOwner(pool, row.tenant_id, tenant.name if tenant else "-", spec.private)


def code_refusal(store: Store, pool: str, caller: Principal) -> str | None:
    """Why ``caller`` may not submit code to ``pool``; None when it may (its own tenant's)."""
    owner = pool_owner(store, pool)
    if owner is None or not owner.visible_to(caller):
        return f"there is no function pool {pool!r}"
    if not caller.may(Action.DEPLOY):
        return (
            f"a {caller.role!r} key calls named functions only (`aif functions ls`); "
            "submit code with a key of role 'member' or above"
        )
    if owner.owned_by(caller):
        return None
    refusal = (
        f"pool {pool!r} belongs to tenant {owner.tenant!r} and runs code (submit, map) "
        f"only from keys of {owner.tenant!r}"
    )
    if caller.is_admin:
        return (
            f"{refusal}; submit code with a key of {owner.tenant!r}, or deploy your own pool "
            f"with `aif deploy pool.yaml --tenant {caller.tenant}`"
        )
    return (
        f"{refusal}; call the named functions it shares over HTTP (`aif functions ls`), or "
        f"ask an administrator for a pool of your own (`aif deploy pool.yaml --tenant "
        f"{caller.tenant}`)"
    )


def may_call(owner: PoolOwner | None, function: FunctionRow, caller: Principal) -> bool:
    """Whether ``caller`` may call ``function`` over HTTP: the pool's tenant, or shared."""
    return (
        owner is not None
        and caller.reaches_service(owner.pool)
        and (owner.owned_by(caller) or (function.shared and not owner.private))
    )


def check_may_call(owner: PoolOwner | None, function: FunctionRow, caller: Principal) -> None:
    """Pass if ``caller`` may call ``function`` (:func:`may_call`), else say why not.

    Raises:
        NotFound: the function does not exist for the caller.
        Forbidden: an administrator of another tenant, and the function is not shared.
    """
    if may_call(owner, function, caller):
        return
    if owner is not None and caller.is_admin:
        raise Forbidden(
            f"function {function.name!r} belongs to tenant {owner.tenant!r}, which has not "
            "shared it.",
            fix=f"call it with a key of {owner.tenant!r}, or share it: `aif functions deploy "
            f"{function.name} {function.target} --pool {function.pool} --shared`",
        )
    raise NotFound(
        f"function {function.name!r} does not exist.", fix="see `aifactory functions ls`"
    )
