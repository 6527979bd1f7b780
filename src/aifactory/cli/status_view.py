"""How `aifactory status` draws a service's status document."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

SINGLE_USER_WARNING = Text(
    "INSECURE SINGLE-USER MODE (AIFACTORY_INSECURE_SINGLE_USER): every workload runs as the "
    "control plane's own user and can read its admin key, database and every tenant's data. "
    "For a personal machine only.",
    style="bold red",
)


def render_status(status: dict[str, Any]) -> Group:
    """A few lines and tables for one service's ``/v1/services/{name}`` document."""
    if "replicas" not in status:  # another tenant's shared service: its name and models only
        return Group(
            Text.assemble((status["name"], "bold"), f"  shared: {', '.join(status['models'])}")
        )
    replicas = status["replicas"]
    states = ", ".join(f"{n} {s}" for s, n in replicas["by_state"].items()) or "none"
    queue = status["queue"]
    head = Text.assemble(
        (status["name"], "bold"),
        f"  {status['backend']}  replicas {replicas['ready']} ready / {replicas['wanted']} wanted "
        f"(min {replicas['min']}, max {replicas['max']}): {states}\n",
        f"in flight {status['in_flight']}   queue {queue['length']}/{queue['limit']}",
        f" (oldest waited {queue['oldest_wait_s']}s)" if queue["length"] else "",
        f"\nruns as {', '.join(status['runs_as'])}" if status["runs_as"] else "",
    )
    parts: list[Any] = [head]
    if status["isolation"] == "single-user":
        parts.append(SINGLE_USER_WARNING)
    if status.get("plaintext_warning"):
        parts.append(Text(status["plaintext_warning"], style="bold red"))
    unreachable = status.get("unreachable") or []
    for message in unreachable:
        parts.append(Text(message, style="bold red"))
    paused = status.get("scaling_paused")
    if paused:
        line = (
            "scaling paused until it answers: nothing is started or replaced there"
            if unreachable  # the reason, said just above
            else f"scaling paused: {paused}"
        )
        parts.append(Text(line, style="yellow"))
    elif status["waiting_on"]:
        parts.append(Text(f"waiting on: {status['waiting_on']}", style="yellow"))
    if status["starting"]:
        table = Table("starting replica", "state", "job", "node", "Slurm says", "expected start")
        for r in status["starting"]:
            eta = f"in {r['eta_s']}s" if r["eta_s"] is not None else ""
            table.add_row(r["id"], r["state"], r["job"], r["node"], r["pending_reason"], eta)
        parts.append(table)
    if status["scaling"]:
        table = Table("when", "from", "to", "why", title="recent scaling decisions")
        for d in status["scaling"][-8:]:
            when = time.strftime("%H:%M:%S", time.localtime(d["at"]))
            table.add_row(when, str(d["from"]), str(d["to"]), d["reason"])
        parts.append(table)
    if status.get("bursts"):
        table = Table("when", "went to", "start estimates", title="recent burst replicas")
        for b in status["bursts"][-8:]:
            when = time.strftime("%H:%M:%S", time.localtime(b["at"]))
            estimates = ", ".join(
                f"{stack} {'cannot tell' if s is None else f'{s:.0f} s'}"
                for stack, s in b["start_estimates_s"].items()
            )
            went = (
                f"{b['stack']} (moved from {b['moved_from']})"
                if b.get("moved_from")
                else b["stack"]
            )
            table.add_row(when, went, estimates)
        parts.append(table)
    return Group(*parts)
