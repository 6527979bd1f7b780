"""Live progress while services start: one status line per service."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from aifactory.cli.client import AdminClient, ClientError


def wait_until_ready(
    client: AdminClient, names: Sequence[str], console: Console, timeout_s: float = 600.0
) -> None:
    """Show each service's replicas until every service has one ready (of its current spec).

    Raises:
        ClientError: when the timeout passes first.
    """
    started = time.monotonic()
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            summaries = [client.json("GET", f"/api/services/{name}") for name in names]
            elapsed = time.monotonic() - started
            live.update(_table(summaries, elapsed))
            if all(_done(s) for s in summaries):
                break
            if elapsed > timeout_s:
                raise ClientError(
                    f"not ready after {timeout_s:.0f}s.",
                    fix="see `aifactory replicas NAME` and `aifactory logs NAME`",
                )
            time.sleep(0.25)
    console.print()


def _done(summary: dict[str, Any]) -> bool:
    """A replica is ready and, after a changed spec, none of the old spec is left."""
    return bool(summary["ready"] >= min(1, summary["wanted"]) and not summary.get("outdated"))


def _table(summaries: list[dict[str, object]], elapsed: float) -> Table:
    table = Table(title=f"starting replicas ({elapsed:.1f}s)", title_justify="left")
    for column in ("service", "ready", "replicas", "waiting on"):
        table.add_column(column)
    for s in summaries:
        states = s["replica_states"]
        assert isinstance(states, dict)
        described = ", ".join(f"{n} {state}" for state, n in states.items()) or "none yet"
        ready = f"{s['ready']}/{s['wanted']}"
        mark = "[green]✓[/green] " if _done(s) else "[yellow]…[/yellow] "
        waiting = str(s["pending_reason"] or "")
        if s.get("outdated") and not waiting:
            waiting = f"rolling out the new spec: {s['outdated']} old replica(s) left"
        table.add_row(mark + str(s["name"]), ready, described, waiting)
    return table
