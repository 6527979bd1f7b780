"""The serverless-function commands of the CLI: ``aifactory functions …``.

::

    aifactory functions deploy NAME module:function --pool POOL [--timeout 5m] [--shared]
    aifactory functions [ls] | rm NAME | pools | calls [--function NAME]
    aifactory functions invoke NAME [--args JSON] [--kwargs JSON] [--no-wait]

Pools themselves are specs (``kind: FunctionPool``) deployed with
``aifactory deploy``, like services.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aifactory.cli.client import AdminClient
from aifactory.config import load_settings
from aifactory.specs import parse_duration_s

functions_app = typer.Typer(
    help="Named functions on function pools: deploy, ls, rm, pools, calls, invoke (default: ls)."
)
console = Console()
_DONE = {"succeeded", "failed", "lost", "timed_out"}


def register(app: typer.Typer) -> None:
    """Add the ``functions`` sub-app to ``app``."""
    app.add_typer(functions_app, name="functions")


def _client() -> AdminClient:
    return AdminClient(load_settings())


@functions_app.callback(invoke_without_command=True)
def _default(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        functions_ls()


@functions_app.command("deploy")
def functions_deploy(
    name: Annotated[str, typer.Argument(help="The function's name in URLs.")],
    target: Annotated[str, typer.Argument(help="module:function, importable on the workers.")],
    pool: Annotated[str, typer.Option(help="The FunctionPool that runs it.")],
    timeout: Annotated[str, typer.Option(help="Longest a call may run: 30s, 5m, 1h.")] = "5m",
    shared: Annotated[
        bool, typer.Option(help="Other tenants may call it too (JSON over HTTP).")
    ] = False,
) -> None:
    """Make module:function callable at POST /v1/functions/NAME/invoke.

    The pool's tenant may always call it; other tenants only when --shared.
    """
    try:
        timeout_s = parse_duration_s(timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--timeout") from exc
    client = _client()
    body = {"name": name, "target": target, "pool": pool, "timeout_s": timeout_s, "shared": shared}
    result = client.json("POST", "/api/functions", json=body)
    console.print(f"function [bold]{name}[/bold]: {result['result']}")
    console.print(
        f"call it: curl -X POST {client.url}/v1/functions/{name}/invoke "
        "-H 'Authorization: Bearer $KEY' -d '{\"args\": [...]}'",
        highlight=False,
        soft_wrap=True,
    )


@functions_app.command("ls")
def functions_ls() -> None:
    """List named functions."""
    rows = _client().json("GET", "/v1/functions")["functions"]
    table = Table("name", "target", "pool", "timeout (s)", "shared", "created")
    for row in rows:
        table.add_row(
            row["name"],
            row["target"],
            row["pool"],
            f"{row['timeout_s']:g}",
            "yes" if row["shared"] else "no",
            row["created_at"],
        )
    console.print(table)


@functions_app.command("rm")
def functions_rm(name: Annotated[str, typer.Argument(help="The function to remove.")]) -> None:
    """Remove a named function (its calls stay on record)."""
    _client().json("DELETE", f"/api/functions/{name}")
    console.print(f"function [bold]{name}[/bold]: removed")


@functions_app.command("pools")
def functions_pools() -> None:
    """List function pools: allocations, workers, queued and running tasks."""
    pools = _client().json("GET", "/v1/functions/pools")["pools"]
    table = Table("pool", "backend", "allocations", "workers", "slots", "queued", "running", "note")
    for pool in pools:
        replicas = pool["replicas"]
        note = pool["waiting_on"] or "; ".join(
            f"{s['id']} {s['state']}" + (f" ({s['pending_reason']})" if s["pending_reason"] else "")
            for s in pool["starting"]
        )
        table.add_row(
            pool["name"],
            pool["backend"],
            f"{replicas['ready']}/{replicas['wanted'] or 0} (max {replicas['max']})",
            str(pool["workers"]["connected"]),
            str(pool["workers"]["slots"]),
            str(pool["queue"]["length"]),
            str(pool["workers"]["running"]),
            note,
        )
    console.print(table)


@functions_app.command("calls")
def functions_calls(
    function: Annotated[str, typer.Option(help="Only calls of this function.")] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
) -> None:
    """List recent calls with their status and duration."""
    params: dict[str, Any] = {"limit": limit, "function": function}
    rows = _client().json("GET", "/v1/functions/calls", params=params)["calls"]
    table = Table("id", "function", "status", "duration (s)", "submitted", "error")
    for row in rows:
        duration = row.get("duration_s")
        table.add_row(
            row["id"],
            row["function"],
            row["status"],
            "" if duration is None else f"{duration:.3f}",
            row["submitted_at"],
            row.get("error", {}).get("message", "")[:80],
        )
    console.print(table)


@functions_app.command("invoke")
def functions_invoke(
    name: Annotated[str, typer.Argument(help="The function to call.")],
    args: Annotated[str, typer.Option(help="Positional arguments, a JSON list.")] = "[]",
    kwargs: Annotated[str, typer.Option(help="Keyword arguments, a JSON object.")] = "{}",
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = True,
) -> None:
    """Call a named function and print its JSON result (or its remote traceback)."""
    body = {"args": _json_param(args, "--args"), "kwargs": _json_param(kwargs, "--kwargs")}
    client = _client()
    call = client.json("POST", f"/v1/functions/{name}/invoke", params={"async": "true"}, json=body)
    if not wait:
        console.print(call["id"])
        return
    with console.status(f"{call['id']}: queued") as status:
        while call["status"] not in _DONE:
            time.sleep(0.2)
            call = client.json("GET", f"/v1/functions/calls/{call['id']}")
            status.update(f"{call['id']}: {call['status']}")
    if call["status"] == "succeeded":
        print(json.dumps(call["result"]))
        return
    error = call.get("error", {})
    console.print(error.get("traceback") or "", highlight=False, markup=False)
    console.print(f"[red]{call['status']}[/red]: {error.get('message', '')}", highlight=False)
    raise typer.Exit(1)


def _json_param(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from exc
