"""Tenants, keys, limits, usage and the audit log on the command line.

::

    aifactory tenants create NAME [--slurm-account A --slurm-partition P --slurm-qos Q]
    aifactory tenants ls | show NAME
    aifactory tenants limits NAME [--key ID] [--rpm N --tpm N --concurrent N
                                   --token-budget N --node-hours X --gpu-hours X --period month]
    aifactory tenants quotas NAME [--replicas N --cpus N --gpus N --memory-gib X
                                   --concurrent-jobs N --buckets N --bytes N] [--clear cpus]
    aifactory keys create [--tenant T] [--role member] [--service S]… [--bucket B]…
                          [--name L] [--expires 30d] | ls | revoke ID
    aifactory usage [--tenant T] [--since 7d] [--by model|key|day|kind] [--format table|csv|json]
    aifactory audit [--limit 50]
"""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aifactory.cli.client import AdminClient
from aifactory.config import load_settings

tenants_app = typer.Typer(help="Create, list, show tenants and set their limits.")
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
console = Console()

_QUANTITIES = (
    "prompt_tokens",
    "completion_tokens",
    "calls",
    "seconds",
    "bytes_in",
    "bytes_out",
    "node_hours",
    "gpu_hours",
)


def register(app: typer.Typer) -> None:
    """Add ``tenants``, ``keys``, ``usage`` and ``audit`` to ``app``."""
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(keys_app, name="keys")
    app.command("usage")(usage)
    app.command("audit")(audit)


def _client() -> AdminClient:
    return AdminClient(load_settings())


@tenants_app.callback(invoke_without_command=True)
def _tenants_default(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        tenants_ls()


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="Tenant (project) name.")],
    slurm_account: Annotated[str | None, typer.Option(help="Slurm account for its jobs.")] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="Default partition.")] = None,
    slurm_qos: Annotated[str | None, typer.Option(help="Default QOS.")] = None,
    unix_user: Annotated[
        str | None,
        typer.Option(help="Unix user its workloads run as (default: the site's rule)."),
    ] = None,
    unix_group: Annotated[
        str | None, typer.Option(help="Primary Unix group for its workloads (one of the user's).")
    ] = None,
) -> None:
    """Create a tenant, or change its Slurm defaults and the Unix user its workloads run as."""
    body: dict[str, Any] = {"name": name}
    for field, value in (
        ("slurm_account", slurm_account),
        ("slurm_partition", slurm_partition),
        ("slurm_qos", slurm_qos),
        ("unix_user", unix_user),
        ("unix_group", unix_group),
    ):
        if value is not None:
            body[field] = value
    tenant = _client().json("POST", "/api/tenants", json=body)
    console.print(f"tenant [bold]{tenant['name']}[/bold]: {_slurm(tenant)}{_unix(tenant)}")


@tenants_app.command("ls")
def tenants_ls() -> None:
    """List tenants with their Slurm defaults."""
    table = Table("tenant", "slurm account", "partition", "qos", "unix user", "created")
    for t in _client().json("GET", "/api/tenants")["tenants"]:
        table.add_row(
            t["name"],
            t["slurm_account"] or "",
            t["slurm_partition"] or "",
            t["slurm_qos"] or "",
            ":".join(filter(None, (t["unix_user"], t["unix_group"]))) or "(site rule)",
            t["created_at"][:19],
        )
    console.print(table)


@tenants_app.command("show")
def tenants_show(name: Annotated[str, typer.Argument(help="Tenant name.")]) -> None:
    """Show a tenant: Slurm defaults, limits, keys and this period's spend."""
    tenant = _client().json("GET", f"/api/tenants/{name}")
    console.print(f"[bold]{tenant['name']}[/bold]: {_slurm(tenant)}")
    if tenant["runs_as"]:
        console.print(f"workloads run as {tenant['runs_as']}")
    else:
        console.print(f"[red]workloads cannot start:[/red] {tenant['runs_as_error']}")
    limits = tenant["limits"] or {}
    set_limits = {k: v for k, v in limits.items() if v is not None and k != "period"}
    console.print(f"limits ({limits.get('period', 'month')}): {set_limits or 'none'}")
    spent = tenant["spent_this_period"]
    console.print(
        f"this {spent['period']}: {spent['prompt_tokens'] + spent['completion_tokens']:.0f} "
        f"tokens, {spent['node_hours']:.3f} node-hours, {spent['gpu_hours']:.3f} GPU-hours"
    )
    quotas = {k: v for k, v in tenant["quotas"].items() if v is not None}
    console.print(f"quotas: {quotas or 'none'}")
    if tenant["keys"] is not None:
        console.print(f"keys: {', '.join(_key_label(k) for k in tenant['keys']) or 'none'}")


_QUOTA_OPTIONS = ("replicas", "cpus", "gpus", "memory-gib", "concurrent-jobs", "buckets", "bytes")


@tenants_app.command("quotas")
def tenants_quotas(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    replicas: Annotated[int | None, typer.Option(help="Replicas its workloads may hold.")] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs its workloads may hold.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs its workloads may hold.")] = None,
    memory_gib: Annotated[float | None, typer.Option(help="Memory (GiB) they may hold.")] = None,
    concurrent_jobs: Annotated[
        int | None, typer.Option(help="Batch jobs running or pending at once.")
    ] = None,
    buckets: Annotated[int | None, typer.Option(help="Buckets it may own.")] = None,
    bytes_: Annotated[
        int | None, typer.Option("--bytes", help="Bytes its buckets may hold.")
    ] = None,
    clear: Annotated[
        list[str] | None, typer.Option(help="Remove a quota (e.g. --clear cpus); repeatable.")
    ] = None,
) -> None:
    """Set the quotas of a tenant (site admins); unnamed quotas stay as they are."""
    values = (replicas, cpus, gpus, memory_gib, concurrent_jobs, buckets, bytes_)
    body: dict[str, Any] = {
        option.replace("-", "_"): value
        for option, value in zip(_QUOTA_OPTIONS, values, strict=True)
        if value is not None
    }
    for option in clear or []:
        if option not in _QUOTA_OPTIONS:
            raise typer.BadParameter(
                f"choose from {', '.join(_QUOTA_OPTIONS)}", param_hint="--clear"
            )
        body[option.replace("-", "_")] = None
    result = _client().json("PUT", f"/api/tenants/{name}/quotas", json=body)
    shown = {k: v for k, v in result["quotas"].items() if v is not None}
    console.print(f"quotas of {name}: {shown or 'none'}")


@tenants_app.command("limits")
def tenants_limits(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    key: Annotated[int | None, typer.Option(help="Set the limits of this key instead.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    concurrent: Annotated[int | None, typer.Option(help="Requests in flight at once.")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Tokens per period.")] = None,
    node_hours: Annotated[float | None, typer.Option(help="Node-hours per period.")] = None,
    gpu_hours: Annotated[float | None, typer.Option(help="GPU-hours per period.")] = None,
    period: Annotated[str | None, typer.Option(help="day or month (UTC).")] = None,
    clear: Annotated[
        list[str] | None, typer.Option(help="Remove a limit (e.g. --clear rpm); repeatable.")
    ] = None,
) -> None:
    """Set limits of a tenant (or of one of its keys); unnamed limits stay as they are."""
    names = {
        "rpm": "requests_per_minute",
        "tpm": "tokens_per_minute",
        "concurrent": "concurrent_requests",
        "token-budget": "token_budget",
        "node-hours": "node_hour_budget",
        "gpu-hours": "gpu_hour_budget",
    }
    body: dict[str, Any] = {}
    for option, value in (
        ("rpm", rpm),
        ("tpm", tpm),
        ("concurrent", concurrent),
        ("token-budget", token_budget),
        ("node-hours", node_hours),
        ("gpu-hours", gpu_hours),
    ):
        if value is not None:
            body[names[option]] = value
    for option in clear or []:
        if option not in names:
            raise typer.BadParameter(f"choose from {', '.join(names)}", param_hint="--clear")
        body[names[option]] = None
    if period is not None:
        body["period"] = period
    if key is not None:
        body["key_id"] = key
    result = _client().json("PUT", f"/api/tenants/{name}/limits", json=body)
    shown = {k: v for k, v in result["limits"].items() if v is not None}
    console.print(f"limits of {name}" + (f" key {key}" if key else "") + f": {shown}")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[
        str | None, typer.Option(help="Tenant (project) the key belongs to; default: yours.")
    ] = None,
    role: Annotated[str, typer.Option(help="admin, tenant-admin, member or inference.")] = "member",
    service: Annotated[
        list[str] | None, typer.Option(help="Limit the key to this service; repeatable.")
    ] = None,
    bucket: Annotated[
        list[str] | None, typer.Option(help="Limit the key to this bucket; repeatable.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime: 12h, 30d, …")] = None,
) -> None:
    """Create an API key (shown once)."""
    body: dict[str, Any] = {"role": role, "name": name}
    if tenant is not None:
        body["tenant"] = tenant
    if expires is not None:
        body["expires_in"] = expires
    if service:
        body["services"] = service
    if bucket:
        body["buckets"] = bucket
    issued = _client().json("POST", "/api/keys", json=body)
    until = f", expires {issued['expires_at'][:19]}" if issued["expires_at"] else ""
    console.print(
        f"key {issued['id']} for tenant {issued['tenant']} ({issued['role']}{until}), shown once:"
    )
    console.print(issued["key"], highlight=False, soft_wrap=True)
    if issued.get("s3_access_key_id"):
        console.print("S3 access key id and secret access key, shown once:")
        console.print(issued["s3_access_key_id"], highlight=False, soft_wrap=True)
        console.print(issued["s3_secret_access_key"], highlight=False, soft_wrap=True)


@keys_app.command("ls")
def keys_ls() -> None:
    """List API keys (never their secrets)."""
    rows = _client().json("GET", "/api/keys")["keys"]
    table = Table(
        "id", "tenant", "role", "scope", "prefix", "name", "created", "expires", "revoked"
    )
    for k in rows:
        table.add_row(
            str(k["id"]),
            k["tenant"],
            k["role"],
            _scope(k),
            k["prefix"] + "…",
            k["name"],
            k["created_at"][:19],
            (k["expires_at"] or "")[:19],
            "yes" if k["revoked"] else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="Key id from `keys ls`.")]) -> None:
    """Revoke an API key."""
    _client().json("DELETE", f"/api/keys/{key_id}")
    console.print(f"key {key_id} revoked")


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[str | None, typer.Option(help="How far back: 1h, 7d, 30d.")] = None,
    by: Annotated[str, typer.Option(help="Group by model, key, day or kind.")] = "model",
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """The usage ledger: tokens, function calls, bytes, node- and GPU-hours."""
    if output not in ("table", "csv", "json"):
        raise typer.BadParameter("choose table, csv or json", param_hint="--format")
    params = {k: v for k, v in (("tenant", tenant), ("since", since), ("by", by)) if v}
    rows: list[dict[str, Any]] = _client().json("GET", "/api/usage", params=params)["usage"]
    columns = ["tenant", by, "entries", *_QUANTITIES]
    if output == "json":
        print(json.dumps(rows, indent=2))
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        print(buffer.getvalue(), end="")
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*(_cell(row[c]) for c in columns))
        console.print(table)


def audit(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """Admin actions: who did what, when (a tenant admin: its own tenant's keys')."""
    table = Table("at", "who", "action", "target", "detail")
    for entry in _client().json("GET", "/api/audit", params={"limit": limit})["audit"]:
        table.add_row(
            entry["at"][:19],
            f"{entry['actor_tenant']} key {entry['actor_key_id']}",
            entry["action"],
            entry["target"],
            json.dumps(entry["detail"]) if entry["detail"] else "",
        )
    console.print(table)


def _slurm(tenant: dict[str, Any]) -> str:
    parts = [
        f"{label} {tenant[field]}"
        for label, field in (
            ("account", "slurm_account"),
            ("partition", "slurm_partition"),
            ("qos", "slurm_qos"),
        )
        if tenant[field]
    ]
    return ", ".join(parts) or "no Slurm defaults"


def _unix(tenant: dict[str, Any]) -> str:
    if not tenant.get("unix_user"):
        return ""
    group = f":{tenant['unix_group']}" if tenant.get("unix_group") else ""
    return f"; runs as Unix user {tenant['unix_user']}{group}"


def _scope(key: dict[str, Any]) -> str:
    parts = [
        f"{label} {', '.join(key[field])}"
        for label, field in (("services", "services"), ("buckets", "buckets"))
        if key.get(field)
    ]
    return "; ".join(parts) or "all"


def _key_label(key: dict[str, Any]) -> str:
    state = " (revoked)" if key["revoked"] else ""
    return f"{key['id']} {key['role']}{state}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)
