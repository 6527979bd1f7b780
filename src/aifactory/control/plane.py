"""The control plane facade: what the admin API and the CLI may ask for."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aifactory.config import Settings
from aifactory.control.agents import AgentKeys
from aifactory.control.fleet import STARTING, Fleet
from aifactory.control.outages import Outage
from aifactory.control.placement import stacks_of
from aifactory.control.reconciler import Reconciler
from aifactory.control.rotation import outdated, spec_fingerprint
from aifactory.control.wakeup import Wakeup
from aifactory.engines import locate, render_engine
from aifactory.errors import AIFactoryError, BadRequest, ConfigError, Conflict, NotFound
from aifactory.specs import Agent, Deployable, FunctionPool, Service, load_deployable
from aifactory.store import ReplicaRow, ServiceRow, Store
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
        catalog = await asyncio.to_thread(self.reconciler.catalog.refresh)
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
        live = self.fleet.of_service(name)
        states: dict[str, int] = {}
        for replica in live:
            states[replica.state.value] = states.get(replica.state.value, 0) + 1
        models = [m["name"] if isinstance(m, dict) else m for m in spec.get("models", [])]
        return {
            "name": name,
            "kind": spec.get("kind", "Service"),
            "status": status,
            "models": models,
            "engine": _engine_label(spec),
            "backend": "+".join(s["stack"] for s in spec.get("stacks") or ())
            or spec.get("backend")
            or self.settings.default_backend,
            "wanted": _wanted(spec),
            "ready": self.fleet.ready_count(name),
            "replica_states": states,
            "in_flight": sum(r.in_flight for r in live),
            "pending_reason": self._pending_reason(name),
            # Replicas still running an earlier spec: a rollout is under way.
            "outdated": sum(1 for r in live if outdated(r, fingerprint)),
            # Who its replicas run as: their tenant's Unix user(s).
            "runs_as": sorted({r.run_as for r in live if r.run_as}),
        }

    def _pending_reason(self, name: str) -> str:
        paused = self.reconciler.paused.get(name)
        if paused:
            return f"scaling paused: {paused}"
        return self.reconciler.backoff.reasons.get(name, "")

    def health(self) -> dict[str, Any]:
        """``ok``, or ``degraded`` with what cannot be asked since when (``/healthz``)."""
        outages = self.reconciler.outages.current()
        return {
            "status": "degraded" if outages else "ok",
            "unreachable": [outage.to_dict() for outage in outages],
            "scaling_paused": dict(self.reconciler.paused),
            "cancels_pending": len(self.lifecycle.cancellations.pending),
        }

    async def status(self, name: str) -> dict[str, Any]:
        """Where a service stands: replicas by state, queue, starting replicas, scaling.

        Raises:
            NotFound: no such service.
        """
        summary = await self.describe(name)
        spec = self.reconciler.specs.get(name)
        live = self.fleet.of_service(name)
        now = time.time()
        return {
            "name": name,
            "kind": summary["kind"],
            "status": summary["status"],
            "models": summary["models"],
            "backend": summary["backend"],
            "replicas": {
                "min": spec.replicas.min if spec else None,
                "max": spec.replicas.max if spec else None,
                "wanted": self.reconciler.autoscaler.wanted_now(name),
                "ready": summary["ready"],
                "by_state": summary["replica_states"],
            },
            "in_flight": summary["in_flight"],
            "runs_as": summary["runs_as"],
            "isolation": self.settings.privilege.mode,
            "queue": self._queue(name, spec),
            "starting": [
                {
                    "id": r.id,
                    "state": r.state.value,
                    "job": r.handle,
                    "node": r.node,
                    "pending_reason": r.pending_reason,
                    "eta_s": round(r.starts_at_epoch - now) if r.starts_at_epoch else None,
                }
                for r in live
                if r.state in STARTING
            ],
            "scaling": [
                {"at": d.at, "from": d.before, "to": d.after, "reason": d.reason}
                for d in self.reconciler.autoscaler.decisions(name)
            ],
            "bursts": [
                {
                    "at": b.at,
                    "stack": b.stack,
                    "start_estimates_s": b.delays,
                    "moved_from": b.moved_from,
                }
                for b in self.reconciler.bursting.decisions(name)
            ],
            "waiting_on": summary["pending_reason"],
            # Stacks (or the database) this service needs that do not answer now.
            "unreachable": [o.message for o in self._outages_of(spec)],
            "scaling_paused": self.reconciler.paused.get(name, ""),
        }

    def _outages_of(self, spec: Deployable | None) -> list[Outage]:
        """The outages of ``spec``'s stacks, and of the database every service needs."""
        needed = set(stacks_of(spec, self.settings.default_backend)) if spec else set()
        return [
            o
            for o in self.reconciler.outages.current()
            if o.dependency in needed or o.dependency == "postgresql"
        ]

    def _queue(self, name: str, spec: Deployable | None) -> dict[str, Any]:
        if isinstance(spec, FunctionPool):
            pools = self.reconciler.pools
            load = pools.load(name) if pools else None
            return {
                "length": load.queued if load else 0,
                "running": load.running if load else 0,
                "workers_per_allocation": spec.workers,
            }
        return {
            "length": self.fleet.holding.length(name),
            "oldest_wait_s": round(self.fleet.holding.oldest_wait_s(name), 1),
            "limit": spec.autoscaling.queue_size if spec else 0,
        }

    async def replicas(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """Recent replicas of a service, newest last, live ones with their load."""
        rows = await asyncio.to_thread(self.store.replicas, name)
        return [self._replica_view(row) for row in rows[-limit:]]

    def _replica_view(self, row: ReplicaRow) -> dict[str, Any]:
        live = self.fleet.replicas.get(row.id)
        now = time.time()
        return {
            "id": row.id,
            "backend": row.backend,
            "state": live.state.value if live else row.state,
            "handle": row.handle,
            "node": live.node if live else "",
            "address": f"{row.host}:{row.port}" if row.host else "",
            "in_flight": live.in_flight if live else 0,
            "pending_reason": live.pending_reason if live else "",
            "eta_s": round(live.starts_at_epoch - now) if live and live.starts_at_epoch else None,
            "time_left_s": round(live.ends_at_epoch - now) if live and live.ends_at_epoch else None,
            "retiring": bool(live and live.retiring),
            # Restored after a restart: kept (and serving) until its stack says whether it runs.
            "unconfirmed": bool(live and live.unconfirmed),
            "timeline": dict(live.timeline) if live else {},
            "reason": row.reason,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
            "log": row.log_path,
            "run_as": row.run_as,
        }

    async def job_script(self, name: str) -> str:
        """The exact script (or command) a new replica of ``name`` would run.

        Raises:
            NotFound: no such service.
        """
        row = await asyncio.to_thread(self.store.service, name)
        if row is None:
            raise NotFound(f"service {name!r} does not exist.", fix="see `aifactory services`")
        service = load_deployable(dict(row.spec), name)
        replica_id = f"{name}-XXXXXX"
        accounts = self.reconciler.accounts
        catalog = await asyncio.to_thread(self.reconciler.catalog.refresh)
        owners = {e.name: e.tenant_id for e in catalog.entries}
        await asyncio.to_thread(accounts.refresh, owners, True)
        try:
            identity = await asyncio.to_thread(accounts.identity, name)
        except ConfigError as exc:
            raise BadRequest(exc.message, exc.fix) from exc
        request = accounts.with_defaults(
            self.reconciler.allocation_request(service, replica_id, identity)
        )
        backend = self.reconciler.backend(service.backend or self.settings.default_backend)
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


def _engine_label(spec: Mapping[str, Any]) -> str:
    if "engine" in spec:
        return str(spec["engine"]["type"])
    return "agent program" if spec.get("kind") == "Agent" else "functions worker"


def _check_update(existing: ServiceRow, service: Deployable, tenant_id: int | None) -> None:
    """Refuse a change that is a different service under the same name."""
    kind = existing.spec.get("kind", "Service")
    if kind != service.kind:
        raise Conflict(
            f"service {service.name!r} is a {kind}; a {service.kind} cannot replace it.",
            fix=f"run `aifactory delete {service.name}` first, or pick another name",
        )
    if existing.tenant_id != tenant_id:
        raise Conflict(
            f"service {service.name!r} runs for another tenant.",
            fix="deploy the change with `--tenant` naming the tenant it runs for",
        )


def _wanted(spec: Mapping[str, Any]) -> int:
    """The least replicas a stored spec asks for (an Agent's ``replicas`` is a plain count)."""
    replicas = spec.get("replicas") or spec.get("allocations") or {}
    return int(replicas) if isinstance(replicas, int) else int(replicas.get("min", 1))
