"""Who pays for a replica: its service's tenant, their Slurm defaults and budgets.

The control plane runs every allocation on behalf of the tenant that owns
the service (or pool). Before a launch it applies the tenant's Slurm account
(always: a spec cannot charge another account) and its partition and QOS
(where the spec names none), and refuses to start anything once the
tenant's node- or GPU-hour budget for the period is spent. When an
allocation ends its node- and GPU-hours go to the usage ledger: by the
scheduler's own accounting where it keeps one (Slurm's ``sacct`` start,
end and node count, the figures the site's own reports use), else by the
control plane's record of when the allocation ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from aifactory.backends import AllocationRequest, Backend, Elapsed, KeepsAccounts
from aifactory.control.fleet import LiveReplica
from aifactory.identity import Identity
from aifactory.specs import Deployable
from aifactory.store import Store, TenantRow
from aifactory.tenancy import TenantIdentities, UsageLedger, period_bounds

__all__ = ["LENT_KIND", "TenantAccounts"]

LENT_KIND = "lent-allocation"

# How long to wait for the scheduler to record an ended allocation.
_ACCOUNTING_TRIES = 15
_ACCOUNTING_WAIT_S = 2.0
# How long a looked-up identity is trusted before the user database is read again.
_IDENTITY_TTL_S = 60.0
# How long tenants read from the store are trusted while no service changed owner.
_TENANTS_TTL_S = 5.0


class TenantAccounts:
    """Tenants of services, refreshed from the store by the reconcile ticks."""

    def __init__(
        self, store: Store, ledger: UsageLedger | None, identities: TenantIdentities
    ) -> None:
        self._store = store
        self._ledger = ledger
        self.identities = identities
        self._owner: dict[str, TenantRow] = {}
        self._owner_ids: dict[str, int | None] = {}
        self._read_at = -_TENANTS_TTL_S
        self._identity: dict[tuple[str, str, str], tuple[float, Identity]] = {}

    def refresh(self, owner_ids: Mapping[str, int | None], force: bool = False) -> None:
        """Read who owns each service (blocking: call from a thread).

        ``owner_ids``: service name -> its tenant's id. Every tenant is read
        again when a service came, went or changed hands, when ``force``,
        or once ``_TENANTS_TTL_S`` passed (a tenant's Slurm account or Unix
        user changed): not on every tick, which at a tenant per service
        would read them all each second.
        """
        now = time.monotonic()
        if not force and owner_ids == self._owner_ids and now - self._read_at < _TENANTS_TTL_S:
            return
        tenants = {t.id: t for t in self._store.tenants()}
        self._owner_ids = dict(owner_ids)
        self._read_at = now
        self._owner = {
            name: tenants[tenant_id]
            for name, tenant_id in owner_ids.items()
            if tenant_id in tenants
        }

    def owner(self, service: str) -> TenantRow | None:
        """The tenant the service runs for, if any."""
        return self._owner.get(service)

    def identity(self, service: str) -> Identity:
        """The Unix identity ``service``'s replicas run as (blocking: the user database).

        Looked up at most once a minute per mapping, so a removed user stops
        launches soon and a busy reconciler does not read the database often.

        Raises:
            ConfigError: the tenant cannot be mapped (see ``TenantIdentities.of``).
        """
        tenant = self._owner.get(service)
        key = (
            tenant.name if tenant else "",
            tenant.unix_user or "" if tenant else "",
            tenant.unix_group or "" if tenant else "",
        )
        cached = self._identity.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _IDENTITY_TTL_S:
            return cached[1]
        identity = self.identities.of(tenant)
        self._identity[key] = (now, identity)
        return identity

    def owner_ids(self) -> dict[str, int]:
        """Service name -> the id of the tenant it runs for."""
        return {name: tenant.id for name, tenant in self._owner.items()}

    def with_defaults(self, request: AllocationRequest) -> AllocationRequest:
        """``request`` charged to its tenant's Slurm account, with their defaults filled in."""
        tenant = self._owner.get(request.service)
        if tenant is None:
            return request
        slurm = request.slurm.for_tenant(
            tenant.slurm_account, tenant.slurm_partition, tenant.slurm_qos
        )
        return dataclasses.replace(request, slurm=slurm)

    def budget_refusal(self, service: str, spec: Deployable, live: list[LiveReplica]) -> str | None:
        """Why no allocation may start for ``service`` now, or None (blocking)."""
        tenant = self._owner.get(service)
        if tenant is None:
            return None
        limits, _ = self._store.limits_of(tenant.id, None)
        if limits is None or (limits.node_hour_budget is None and limits.gpu_hour_budget is None):
            return None
        start, end = period_bounds(limits.period, time.time())
        since = datetime.fromtimestamp(start, UTC)
        running = [r for r in live if self._owner.get(r.service) is tenant]
        for column, budget, label in (
            ("node_hours", limits.node_hour_budget, "node-hour"),
            ("gpu_hours", limits.gpu_hour_budget, "GPU-hour"),
        ):
            if budget is None:
                continue
            spent = self._store.usage_sum(tenant.id, since, column) + sum(
                _hours(r, spec.resources.gpus)[column] for r in running
            )
            if spent >= budget:
                reset = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
                return (
                    f"tenant {tenant.name!r} spent its {label} budget for this {limits.period} "
                    f"({spent:.3f} of {budget:g}); it resets at {reset}"
                )
        return None

    async def charge_end(
        self, replica: LiveReplica, gpus: int, backend: Backend, tries: int = _ACCOUNTING_TRIES
    ) -> None:
        """Put an ended allocation's node- and GPU-hours in the ledger.

        A backend that keeps accounts is asked (a few ``tries``, as the
        scheduler records a job once it has fully ended); failing that, the
        control plane's own record is charged.
        """
        if self._owner.get(replica.service) is None or "running" not in replica.timeline:
            return
        elapsed = None
        if isinstance(backend, KeepsAccounts) and replica.handle:
            for attempt in range(tries):
                elapsed = await backend.elapsed(replica.handle)
                if elapsed is not None or attempt == tries - 1:
                    break
                await asyncio.sleep(_ACCOUNTING_WAIT_S)
        self.record_end(replica, gpus, backend.name, elapsed)

    def record_end(
        self, replica: LiveReplica, gpus: int, backend: str, elapsed: Elapsed | None = None
    ) -> None:
        """Charge an ended allocation: by ``elapsed`` (the scheduler's) or our own record."""
        tenant = self._owner.get(replica.service)
        if tenant is None or self._ledger is None or "running" not in replica.timeline:
            return
        if elapsed is not None:
            seconds = max(0.0, elapsed.ended_at - elapsed.started_at)
            nodes, source = elapsed.nodes, f"{backend}-accounting"
        else:
            started = replica.timeline["running"]
            seconds, nodes, source = max(0.0, time.time() - started), 1, "control-plane"
        # Lent allocations ran on idle capacity the site would otherwise
        # waste: their own kind, so `aif usage --by kind` shows them apart.
        self._ledger.record(
            tenant_id=tenant.id,
            key_id=None,
            kind=LENT_KIND if replica.lent else "allocation",
            model=replica.service,
            endpoint=f"replica.{backend}" + (".lent" if replica.lent else ""),
            seconds=seconds,
            node_hours=seconds * nodes / 3600,
            gpu_hours=seconds * nodes * gpus / 3600,
            source=source,
        )


def _hours(replica: LiveReplica, gpus: int) -> dict[str, float]:
    started = replica.timeline.get("running")
    seconds = max(0.0, time.time() - started) if started else 0.0
    return {"seconds": seconds, "node_hours": seconds / 3600, "gpu_hours": seconds / 3600 * gpus}
