"""The command line: ``aifactory`` (or ``aif``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aifactory.cli import batches, catalog, functions, jobs, objects, tenancy
from aifactory.cli.client import AdminClient, ClientError
from aifactory.config import Settings, load_settings
from aifactory.errors import AIFactoryError

app = typer.Typer(
    pretty_exceptions_show_locals=False,
    help="aifactory: OpenAI-compatible endpoints on Slurm, Kubernetes or this machine.",
    no_args_is_help=True,
    add_completion=False,
)
jobs.register(app)
functions.register(app)
tenancy.register(app)
objects.register(app)
batches.register(app)
catalog.register(app)
console = Console()
err = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _client() -> AdminClient:
    return AdminClient(_settings())


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    background: Annotated[bool, typer.Option("--background", "-d", help="Run detached.")] = False,
) -> None:
    """Start the control plane (gateway, API, reconciler) on this machine."""
    settings = _settings(host=host, port=port)
    if background:
        from aifactory.cli.daemon import start_background

        pid = start_background(settings)
        console.print(
            f"aifactory is up at {settings.control_url} (pid {pid}); stop it with `aifactory down`"
        )
        return
    from aifactory.server import serve

    serve(settings)


@app.command()
def down() -> None:
    """Stop a control plane started with `up --background`."""
    from aifactory.cli.daemon import stop_background

    if stop_background(_settings()):
        console.print("aifactory stopped")
    else:
        console.print("no background aifactory was running")


@app.command()
def deploy(
    spec: Annotated[
        Path,
        typer.Argument(help="Service or FunctionPool spec (YAML).", exists=True, dir_okay=False),
    ],
    wait: Annotated[bool, typer.Option(help="Wait until a replica is ready.")] = True,
    tenant: Annotated[
        str | None, typer.Option(help="Run it for this tenant (default: your own).")
    ] = None,
) -> None:
    """Deploy a service (or a function pool) from a YAML spec."""
    from aifactory.cli.progress import wait_until_ready
    from aifactory.specs import load_deployable

    service = load_deployable(spec.read_text(), str(spec))
    client = _client()
    result = client.json(
        "POST",
        "/api/services",
        content=spec.read_bytes(),
        headers={"X-Spec-Origin": str(spec)},
        params={"tenant": tenant} if tenant else {},
    )
    console.print(f"service [bold]{service.name}[/bold]: {result['result']}")
    if result["result"] == "updated":
        console.print("rolling out: new replicas start beside the old ones, which then drain")
    if service.replicas.min == 0:
        work = "task" if service.kind == "FunctionPool" else "request"
        console.print(
            f"scaled to zero: the first {work} starts a replica and waits for it "
            f"(watch with `aifactory status {service.name} --watch`)"
        )
    elif wait:
        wait_until_ready(client, [service.name], console)


@app.command()
def services() -> None:
    """List services and their replicas."""
    answer = _client().json("GET", "/api/services")
    table = Table("name", "models", "engine", "backend", "ready", "runs as", "status", "waiting on")
    for s in answer["services"]:
        if "status" not in s:  # another tenant's shared service: its name and models only
            table.add_row(s["name"], ", ".join(s["models"]), *["-"] * 4, "shared", "")
            continue
        table.add_row(
            s["name"],
            ", ".join(s["models"]),
            s["engine"],
            s["backend"],
            f"{s['ready']}/{s['wanted']}",
            ", ".join(s["runs_as"]),
            s["status"],
            s["pending_reason"],
        )
    console.print(table)
    if answer["isolation"] == "single-user":
        from aifactory.cli.status_view import SINGLE_USER_WARNING

        console.print(SINGLE_USER_WARNING)


@app.command()
def replicas(name: Annotated[str, typer.Argument(help="Service name.")]) -> None:
    """Show the recent replicas of a service (state, job, node, pending reason, time left)."""
    rows = _client().json("GET", f"/api/services/{name}/replicas")["replicas"]
    table = Table(
        "replica", "backend", "job", "runs as", "state", "node", "address", "in flight", "note"
    )
    for r in rows:
        table.add_row(
            r["id"],
            r["backend"],
            r["handle"],
            r["run_as"],
            r["state"] + (" (retiring)" if r["retiring"] else ""),
            r["node"],
            r["address"],
            str(r["in_flight"]),
            _replica_note(r),
        )
    console.print(table)


def _replica_note(replica: dict[str, Any]) -> str:
    if replica.get("unconfirmed"):
        return "restored after a restart; its stack has not confirmed it runs yet"
    if replica["pending_reason"]:
        eta = f", expected start in {replica['eta_s']}s" if replica["eta_s"] is not None else ""
        return f"{replica['pending_reason']}{eta}"
    if replica["time_left_s"] is not None and replica["state"] == "ready":
        return f"{replica['time_left_s']}s left"
    return str(replica["reason"])


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="Service name.")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
) -> None:
    """Where a service stands: replicas by state, queue, pending reasons, scaling decisions."""
    from rich.live import Live

    from aifactory.cli.status_view import render_status

    client = _client()
    if not watch:
        console.print(render_status(client.json("GET", f"/v1/services/{name}")))
        return
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            live.update(render_status(client.json("GET", f"/v1/services/{name}")))
            time.sleep(1)


@app.command("job-script")
def job_script(name: Annotated[str, typer.Argument(help="Service name.")]) -> None:
    """Print exactly what a new replica of a service would run (its batch script)."""
    console.out(_client().request("GET", f"/api/services/{name}/job-script").text, highlight=False)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Service name.")],
    replica: Annotated[str, typer.Option(help="Replica id (default: the newest).")] = "",
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """Print the log of a service's replica."""
    client = _client()
    seen = ""
    while True:
        text = client.request(
            "GET", f"/api/services/{name}/logs", params={"replica": replica, "lines": lines}
        ).text
        new = text[len(seen) :] if seen and text.startswith(seen) else text
        if new != seen or not follow:
            console.out(new, end="", highlight=False)
        if not follow:
            return
        seen = text
        time.sleep(1)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Service name.")],
    wait: Annotated[bool, typer.Option(help="Wait until its replicas are stopped.")] = True,
) -> None:
    """Delete a service: its replicas drain, then stop."""
    client = _client()
    client.json("DELETE", f"/api/services/{name}")
    if wait:
        with console.status(f"draining and stopping {name}…"):
            while True:
                try:
                    client.json("GET", f"/api/services/{name}")
                except ClientError:
                    break
                time.sleep(0.3)
    console.print(f"service [bold]{name}[/bold] deleted")


@app.command()
def demo(
    examples: Annotated[
        Path, typer.Option(help="Folder with chat.yaml and embeddings.yaml.")
    ] = Path("examples"),
) -> None:
    """Start everything, deploy the example chat and embeddings models, and use them."""
    from aifactory.cli.demo import run_demo

    run_demo(_settings(), examples, console)


def main() -> None:
    """Entry point of the `aifactory` and `aif` commands."""
    try:
        app()
    except AIFactoryError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        if exc.fix:
            err.print(f"[yellow]fix:[/yellow] {exc.fix}", highlight=False)
        raise SystemExit(1) from None
