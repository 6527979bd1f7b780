"""The control plane facade: what the admin API and the CLI may ask for."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aifactory.config import Settings
from aifactory.control.agents import AgentKeys
from aifactory.control.fleet import Fleet
from aifactory.control.placement import stacks_of
from aifactory.control.pools import Pools
from aifactory.control.reconciler import Reconciler
from aifactory.control.rotation import spec_fingerprint
from aifactory.control.views import (
    health_view,
    outages_of,
    queue_view,
    replica_view,
    status_view,
    summary_view,
)
from aifactory.control.wakeup import Wakeup
from aifactory.engines import locate, render_engine
from aifactory.errors import AIFactoryError, BadRequest, ConfigError, Conflict, NotFound
from aifactory.specs import Agent, Deployable, FunctionPool, Service, load_deployable
from aifactory.store import ServiceRow, Store
from aifactory.tenancy import UsageLedger

_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^[0-9a-fA-F:]{2,39}$")


class ControlPlane:
    """Deploy, delete and inspect services; accept replica registrations."""

    def __init__(self, settings: Settings, store: Store, ledger: UsageLedger | None = None) -> None:
        self.settings = settings
        self.store = store
        # Held requests ask for replicas through it: the cold start's one way in.
        self.wakeup = Wakeup()
        self.fleet = Fleet(on_demand=self.wakeup.demand)
        self.agent_keys = AgentKeys(settings, store)
        self.reconciler = Reconciler(
            settings, store, self.fleet, ledger, self.agent_keys, self.wakeup
        )
        self.lifecycle = self.reconciler.lifecycle
        self.catalog = self.reconciler.catalog

    def serve_function_pools(self, pools: Pools) -> None:
        """Run FunctionPools through ``pools`` (the hub, built after the plane for its wake-up)."""
        self.reconciler.serve_function_pools(pools)

    async def start(self) -> None:
        """Start reconciling."""
        await self.reconciler.start()

    async def stop(self) -> None:
        """Drain and stop every replica."""
        await self.reconciler.stop()

    async def deploy(self, service: Deployable, tenant_id: int | None) -> str:
        """Add or change a service: ``"created"``, ``"updated"`` or ``"unchanged"``.

        A changed spec rolls out: replicas of the new spec start beside the
        old ones, which drain once the new ones are ready.

        Raises:
            Conflict: the name or a model name is taken by a different service,
                or the change would move the service to another kind or tenant.
            BadRequest: the engine or backend cannot run this spec.
        """
        self._check_runnable(service)
        existing = await asyncio.to_thread(self.store.service, service.name)
        if existing is not None:
            if existing.status == "deleting":
                raise Conflict(
                    f"service {service.name!r} is being deleted.", fix="wait a moment and retry"
                )
            if existing.spec == service.to_document():
                return "unchanged"
            _check_update(existing, service, tenant_id)
        for name in service.served_names() if isinstance(service, Service) else []:
            owner = self.fleet.resolve(name)
            if owner is not None and owner.service != service.name:
                raise Conflict(
                    f"model name {name!r} is already served by service {owner.service!r}.",
                    fix="choose another model name or alias",
                )
        document = service.to_document()
        if existing is not None:
            await asyncio.to_thread(self.store.set_service_spec, service.name, document)
            self.wakeup.now()
            return "updated"
        if isinstance(service, Agent):
            await asyncio.to_thread(self.agent_keys.provision, service.name, tenant_id)
        await asyncio.to_thread(self.store.add_service, service.name, document, tenant_id)
        self.wakeup.now()
        return "created"

    def _check_runnable(self, service: Deployable) -> None:
        for backend_name in stacks_of(service, self.settings.default_backend):
            self._check_runnable_on(service, backend_name)

    def _check_runnable_on(self, service: Deployable, backend_name: str) -> None:
        try:
            self.reconciler.backend(backend_name)
            if isinstance(service, FunctionPool):
                if self.reconciler.pools is None:
                    raise BadRequest("this control plane runs no functions broker.")
            elif isinstance(service, Service):
                render_engine(service, self.settings.cache_dir)
                if backend_name == "local" and service.engine.type == "llama.cpp":
                    locate(service.engine.model)
        except AIFactoryError as exc:
            raise BadRequest(exc.message, exc.fix, param="engine") from exc
        if backend_name == "local" and service.resources.cpus > self.settings.local_cpus:
            raise BadRequest(
                f"service {service.name!r} asks for {service.resources.cpus} CPUs per replica; "
                f"this machine gives the local backend {self.settings.local_cpus}.",
                fix="lower `resources.cpus` or set AIFACTORY_LOCAL_CPUS",
                param="resources.cpus",
            )

    async def delete(self, name: str) -> None:
        """Mark a service for deletion; its replicas drain, then it disappears.

        Raises:
            NotFound: no such service.
        """
        row = await asyncio.to_thread(self.store.service, name)
        if row is None:
            raise NotFound(f"service {name!r} does not exist.", fix="see `aifactory services`")
        await asyncio.to_thread(self.store.set_service_status, name, "deleting")
        if row.spec.get("kind") == "Agent":
            await asyncio.to_thread(self.agent_keys.revoke, name)
        self.wakeup.now()

    async def services(self) -> list[dict[str, Any]]:
        """A summary of every service (each stored spec parsed and digested once per change)."""
        catalog = await asyncio.to_thread(self.catalog.refresh)
        return [self._summary(e.name, e.status, e.document, e.fingerprint) for e in catalog.entries]

    async def describe(self, name: str) -> dict[str, Any]:
        """One service with its spec and live replicas.

        Raises:
            NotFound: no such service.
        """
        row = await asyncio.to_thread(self.store.service, name)
        if row is None:
            raise NotFound(f"service {name!r} does not exist.", fix="see `aifactory services`")
        summary = self._summary(row.name, row.status, row.spec, spec_fingerprint(row.spec))
        summary["spec"] = row.spec
        summary["replicas"] = await self.replicas(name)
        return summary

    def _summary(
        self, name: str, status: str, spec: Mapping[str, Any], fingerprint: str
    ) -> dict[str, Any]:
        default = self.settings.default_backend
        waiting_on = self.reconciler.waiting_on(name)
        return summary_view(self.fleet, name, status, spec, fingerprint, default, waiting_on)

    def health(self) -> dict[str, Any]:
        """``ok``, or ``degraded`` with what cannot be asked since when (``/healthz``)."""
        reconciler = self.reconciler
        return health_view(
            reconciler.outages_now(), reconciler.scaling_paused(), reconciler.cancels_pending()
        )

    async def status(self, name: str) -> dict[str, Any]:
        """Where a service stands: replicas by state, queue, starting replicas, scaling.

        Raises:
            NotFound: no such service.
        """
        summary = await self.describe(name)
        reconciler = self.reconciler
        spec = reconciler.spec(name)
        default = self.settings.default_backend
        return status_view(
            summary,
            spec,
            self.fleet.of_service(name),
            queue_view(self.fleet, name, spec, reconciler.pools),
            reconciler.scaling(name),
            outages_of(spec, reconciler.outages_now(), default),
            reconciler.scaling_paused().get(name, ""),
            self.settings.privilege.mode,
            self.settings.plaintext_warning,
        )

    async def replicas(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """Recent replicas of a service, newest last, live ones with their load."""
        rows = await asyncio.to_thread(self.store.replicas, name)
        return [replica_view(row, self.fleet.replicas.get(row.id)) for row in rows[-limit:]]

    async def job_script(self, name: str) -> str:
        """The exact script (or command) a new replica of ``name`` would run.

        Raises:
            NotFound: no such service.
        """
        entry = (await asyncio.to_thread(self.catalog.refresh)).get(name)
        if entry is None:
            raise NotFound(f"service {name!r} does not exist.", fix="see `aifactory services`")
        # Parsed once per change; only a service being deleted (or a broken spec) is parsed here.
        service = entry.spec or load_deployable(dict(entry.document), name)
        try:
            request, backend = await self.reconciler.planned_request(service)
        except ConfigError as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        return backend.render(request)

    async def logs(self, name: str, replica_id: str = "", lines: int = 200) -> str:
        """The last lines of a replica's log (the newest replica by default).

        Raises:
            NotFound: no such service or replica, or nothing logged yet.
        """
        rows = await asyncio.to_thread(self.store.replicas, name)
        if replica_id:
            rows = [r for r in rows if r.id == replica_id]
        if not rows:
            raise NotFound(
                f"no replica {replica_id or ''} of service {name!r} has logs.".replace("  ", " ")
            )
        path = Path(rows[-1].log_path)
        return await asyncio.to_thread(_tail, path, lines)

    async def register(
        self, replica_id: str, token: str, host: Any, port: Any, launched_at: Any = None
    ) -> None:
        """Accept a launcher's registration.

        Raises:
            BadRequest: a malformed host, port or launch time.
        """
        if not isinstance(host, str) or not _HOST.match(host):
            raise BadRequest(f"host {host!r} is not a host name or address.", param="host")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise BadRequest(f"port {port!r} is not a TCP port.", param="port")
        if launched_at is not None and not isinstance(launched_at, int | float):
            raise BadRequest(
                f"launched_at {launched_at!r} is not a Unix time.", param="launched_at"
            )
        await self.lifecycle.register(replica_id, token, host, port, launched_at)

    async def preempted(self, replica_id: str, token: str) -> int:
        """A lent replica is being preempted: drain it; the requests still in flight on it."""
        return await self.lifecycle.preempted(replica_id, token)


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    with path.open(errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


def _check_update(existing: ServiceRow, service: Deployable, tenant_id: int | None) -> None:
    """Refuse a change that is a different service under the same name."""
    if existing.tenant_id != tenant_id:
        raise Conflict(
            f"service {service.name!r} runs for another tenant.",
            fix="pick another name (names are shared by every tenant); a site admin changes "
            "it with `--tenant` naming the tenant it runs for",
        )
    kind = existing.spec.get("kind", "Service")
    if kind != service.kind:
        old, new = (f"{'an' if k[0] in 'AEIOU' else 'a'} {k}" for k in (str(kind), service.kind))
        raise Conflict(
            f"service {service.name!r} is {old}; {new} cannot replace it.",
            fix=f"run `aifactory delete {service.name}` first, or pick another name",
        )
