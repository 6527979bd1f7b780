"""What the control plane shows: the summaries the admin API, ``aif status`` and the dashboard read.

Each view is built from what the plane holds (stored rows, the live fleet)
and what the reconciler tells through its read interface (``Reconciler``'s
"what the control plane reads" methods); none of them changes anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aifactory.control.autoscaler import ScalingDecision
from aifactory.control.bursting import BurstDecision
from aifactory.control.fleet import STARTING, Fleet, LiveReplica
from aifactory.control.outages import Outage
from aifactory.control.placement import stacks_of
from aifactory.control.pools import Pools
from aifactory.control.rotation import outdated
from aifactory.specs import Deployable, FunctionPool
from aifactory.store import ReplicaRow

__all__ = [
    "health_view",
    "outages_of",
    "queue_view",
    "replica_view",
    "status_view",
    "summary_view",
]


def summary_view(
    fleet: Fleet,
    name: str,
    status: str,
    spec: Mapping[str, Any],
    fingerprint: str,
    default_backend: str,
    waiting_on: str,
) -> dict[str, Any]:
    """One service in a list: its stored spec's essentials and its live replicas."""
    live = fleet.of_service(name)
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
        or default_backend,
        "wanted": _least_wanted(spec),
        "ready": fleet.ready_count(name),
        "replica_states": states,
        "in_flight": sum(r.in_flight for r in live),
        "pending_reason": waiting_on,
        # Replicas still running an earlier spec: a rollout is under way.
        "outdated": sum(1 for r in live if outdated(r, fingerprint)),
        # Who its replicas run as: their tenant's Unix user(s).
        "runs_as": sorted({r.run_as for r in live if r.run_as}),
    }


def status_view(
    summary: Mapping[str, Any],
    spec: Deployable | None,
    live: list[LiveReplica],
    queue: dict[str, Any],
    scaling: tuple[int | None, list[ScalingDecision], list[BurstDecision]],
    unreachable: list[Outage],
    paused: str,
    isolation: str,
    plaintext_warning: str = "",
) -> dict[str, Any]:
    """Where a service stands (``aif status``): replicas by state, queue, starting, scaling."""
    wanted, decisions, bursts = scaling
    now = time.time()
    return {
        "name": summary["name"],
        "kind": summary["kind"],
        "status": summary["status"],
        "models": summary["models"],
        "backend": summary["backend"],
        "replicas": {
            "min": spec.replicas.min if spec else None,
            "max": spec.replicas.max if spec else None,
            "wanted": wanted,
            "ready": summary["ready"],
            "by_state": summary["replica_states"],
        },
        "in_flight": summary["in_flight"],
        "runs_as": summary["runs_as"],
        "isolation": isolation,
        # Non-empty when the API answers a network in clear (Settings.plaintext_warning).
        "plaintext_warning": plaintext_warning,
        "queue": queue,
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
            {"at": d.at, "from": d.before, "to": d.after, "reason": d.reason} for d in decisions
        ],
        "bursts": [
            {
                "at": b.at,
                "stack": b.stack,
                "start_estimates_s": b.delays,
                "moved_from": b.moved_from,
            }
            for b in bursts
        ],
        "waiting_on": summary["pending_reason"],
        # Stacks (or the database) this service needs that do not answer now.
        "unreachable": [o.message for o in unreachable],
        "scaling_paused": paused,
    }


def queue_view(
    fleet: Fleet, name: str, spec: Deployable | None, pools: Pools | None
) -> dict[str, Any]:
    """What waits for ``name``: a pool's queued tasks, else the gateway's held requests."""
    if isinstance(spec, FunctionPool):
        load = pools.load(name) if pools else None
        return {
            "length": load.queued if load else 0,
            "running": load.running if load else 0,
            "workers_per_allocation": spec.workers,
        }
    return {
        "length": fleet.holding.length(name),
        "oldest_wait_s": round(fleet.holding.oldest_wait_s(name), 1),
        "limit": spec.autoscaling.queue_size if spec else 0,
    }


def outages_of(
    spec: Deployable | None, outages: list[Outage], default_backend: str
) -> list[Outage]:
    """The outages of ``spec``'s stacks, and of the database every service needs."""
    needed = set(stacks_of(spec, default_backend)) if spec else set()
    return [o for o in outages if o.dependency in needed or o.dependency == "postgresql"]


def health_view(
    outages: list[Outage], paused: Mapping[str, str], cancels_pending: int
) -> dict[str, Any]:
    """``ok``, or ``degraded`` with what cannot be asked since when (``/healthz``)."""
    return {
        "status": "degraded" if outages else "ok",
        "unreachable": [outage.to_dict() for outage in outages],
        "scaling_paused": dict(paused),
        "cancels_pending": cancels_pending,
    }


def replica_view(row: ReplicaRow, live: LiveReplica | None) -> dict[str, Any]:
    """One replica as stored, with its live state and load while it lives."""
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


def _engine_label(spec: Mapping[str, Any]) -> str:
    if "engine" in spec:
        return str(spec["engine"]["type"])
    return "agent program" if spec.get("kind") == "Agent" else "functions worker"


def _least_wanted(spec: Mapping[str, Any]) -> int:
    """The least replicas a stored spec asks for (an Agent's ``replicas`` is a plain count)."""
    replicas = spec.get("replicas") or spec.get("allocations") or {}
    return int(replicas) if isinstance(replicas, int) else int(replicas.get("min", 1))
