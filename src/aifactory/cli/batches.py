"""The Batch API's commands: ``aifactory batches [ls] | show ID | cancel ID``.

They act as the key in use (``AIFACTORY_API_KEY``, else the admin key), so a
tenant's key lists that tenant's batches.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aifactory.cli.client import AdminClient
from aifactory.config import load_settings

batches_app = typer.Typer(help="List, show and cancel OpenAI batches (default: ls).")
console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``batches`` sub-app to ``app``."""
    app.add_typer(batches_app, name="batches")


def _client() -> AdminClient:
    return AdminClient(load_settings())


@batches_app.callback(invoke_without_command=True)
def _batches_default(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        batches_ls()


@batches_app.command("ls")
def batches_ls(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
) -> None:
    """List the newest batches: status, lines done, where they run."""
    rows = _client().json("GET", "/v1/batches", params={"limit": limit})["data"]
    table = Table(
        "id", "status", "endpoint", "model", "done", "failed", "backend", "eta", "created"
    )
    for batch in rows:
        progress = batch["progress"]
        table.add_row(
            batch["id"],
            batch["status"],
            batch["endpoint"],
            batch["model"],
            f"{progress['lines_done']}/{progress['lines_total']}",
            str(batch["request_counts"]["failed"]),
            ",".join(sorted({j["backend"] for j in progress["jobs"]})),
            _eta(progress),
            _when(batch["created_at"]),
        )
    console.print(table)


@batches_app.command("show")
def batches_show(batch_id: Annotated[str, typer.Argument(help="Batch id.")]) -> None:
    """Show a batch: status, lines done, each shard's job and state, throughput, ETA, usage."""
    batch = _client().json("GET", f"/v1/batches/{batch_id}")
    progress = batch["progress"]
    console.print(f"[bold]{batch['id']}[/bold]: {batch['status']}", highlight=False)
    console.print(f"endpoint: {batch['endpoint']}  model: {batch['model']}", highlight=False)
    console.print(
        f"lines:    {progress['lines_done']}/{progress['lines_total']} done, "
        f"{batch['request_counts']['failed']} failed; "
        f"{progress['lines_per_s'] or '-'} lines/s; ETA {_eta(progress)}",
        highlight=False,
    )
    console.print(
        f"started:  scheduler wait {_seconds(progress['scheduler_wait_s'])}, "
        f"first line after {_seconds(progress['first_line_s'])}",
        highlight=False,
    )
    for name in ("output_file_id", "error_file_id"):
        if batch[name]:
            console.print(f"{name.removesuffix('_id').replace('_', ' ')}: {batch[name]}")
    if batch.get("usage"):
        usage = batch["usage"]
        console.print(
            f"usage:    {usage['input_tokens']} input + {usage['output_tokens']} output tokens, "
            f"{usage['node_hours']:.4f} node-hours; charged at a {usage['discount']:.0%} "
            f"discount: {usage['charged']}",
            highlight=False,
        )
    table = Table("shard", "backend", "job", "state", "starts in", "attempts", "lines", "reason")
    for job in progress["jobs"]:
        table.add_row(
            str(job["shard"]),
            job["backend"],
            job["job"],
            job["state"],
            _seconds(job["expected_start_s"]),
            str(job["attempts"]),
            f"{job['lines_done']}/{job['lines_total']}",
            job["reason"],
        )
    console.print(table)


@batches_app.command("cancel")
def batches_cancel(batch_id: Annotated[str, typer.Argument(help="Batch id.")]) -> None:
    """Cancel a batch: its jobs stop, the lines done so far stay in its output file."""
    batch = _client().json("POST", f"/v1/batches/{batch_id}/cancel")
    console.print(f"batch {batch['id']}: {batch['status']}")


def _eta(progress: dict[str, Any]) -> str:
    return _seconds(progress["eta_s"])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def _when(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
