"""Per-tenant quotas: what a tenant's workloads may hold at once.

A workload holds, at most, ``replicas.max`` replicas (a pool's
``allocations.max``, an agent's ``replicas``) of its resources; the sum over
the tenant's services, agents and pools must stay within the quotas the site
set, and so must its running batch jobs and its buckets. A refusal names the
quota, what the request needs and what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from aifactory.errors import Forbidden
from aifactory.specs import Deployable, FunctionPool, Service, load_deployable
from aifactory.store import QuotaSet, Store

__all__ = ["QuotaExceeded", "Quotas", "holding_of"]


class QuotaExceeded(Forbidden):
    """Raised when a request would take a tenant past one of its quotas (403)."""

    code = "quota_exceeded"


@dataclass(frozen=True)
class Holding:
    """What a workload (or a tenant's workloads) may hold at most."""

    replicas: int = 0
    cpus: int = 0
    gpus: int = 0
    memory_gib: float = 0.0

    def __add__(self, other: Holding) -> Holding:
        return Holding(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Holding)))


def holding_of(workload: Deployable) -> Holding:
    """The most ``workload`` can hold: its largest replica count times its resources."""
    if isinstance(workload, Service | FunctionPool):
        count = workload.replicas.max
    else:
        count = workload.count
    resources = workload.resources
    return Holding(
        count, count * resources.cpus, count * resources.gpus, count * resources.memory_gib
    )


class Quotas:
    """Checks requests against a tenant's quotas (blocking: call from a thread).

    Args:
        store: Where quotas, services, jobs and buckets are kept.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def check_deploy(self, tenant_id: int, tenant: str, workload: Deployable) -> None:
        """Returns when ``workload`` (new or changed) fits the tenant's quotas.

        Raises:
            QuotaExceeded: naming the first quota it would exceed.
        """
        quotas = self._store.quotas_of(tenant_id)
        if all(getattr(quotas, f.name) is None for f in fields(Holding)):
            return
        held = Holding()
        for row in self._store.services():
            if row.tenant_id == tenant_id and row.name != workload.name:
                held += holding_of(load_deployable(row.spec, f"service {row.name}"))
        wanted = holding_of(workload)
        for field in fields(Holding):
            name = field.name
            _fits(tenant, quotas, name, getattr(held, name), getattr(wanted, name))

    def check_job(self, tenant_id: int, tenant: str, active_jobs: int) -> None:
        """Returns when one more batch job fits beside the tenant's ``active_jobs``."""
        _fits(tenant, self._store.quotas_of(tenant_id), "concurrent_jobs", active_jobs, 1)

    def check_bucket(self, tenant_id: int, tenant: str) -> None:
        """Returns when the tenant may own one more bucket."""
        owned = sum(1 for record in self._store.buckets() if record.tenant_id == tenant_id)
        _fits(tenant, self._store.quotas_of(tenant_id), "buckets", owned, 1)

    def of(self, tenant_id: int) -> QuotaSet:
        """The tenant's quotas."""
        return self._store.quotas_of(tenant_id)


def _fits(tenant: str, quotas: QuotaSet, name: str, held: float, wanted: float) -> None:
    quota = getattr(quotas, name)
    if quota is None or held + wanted <= quota:
        return
    left = max(0, quota - held)
    raise QuotaExceeded(
        f"tenant {tenant!r} is over its {name} quota: it allows {_n(quota)}, "
        f"{_n(held)} are held already, this needs {_n(wanted)} ({_n(left)} left).",
        fix="lower replicas.max or resources, delete something, or ask the site for more",
    )


def _n(value: float) -> str:
    return f"{value:g}"
