"""``aifactory objects serve`` and ``aifactory buckets ls|create|rm|share``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aifactory.cli.client import AdminClient
from aifactory.config import load_settings

objects_app = typer.Typer(help="S3-compatible object storage.", no_args_is_help=True)
buckets_app = typer.Typer(help="List, create, delete and share S3 buckets.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``objects`` and ``buckets`` sub-apps to ``app``."""
    app.add_typer(objects_app, name="objects")
    app.add_typer(buckets_app, name="buckets")


def _client() -> AdminClient:
    return AdminClient(load_settings())


@objects_app.command("serve")
def serve(
    root: Annotated[
        Path | None, typer.Option(help="Directory to serve; its subdirectories are buckets.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 9000).")] = None,
    domain: Annotated[
        str | None, typer.Option(help="Virtual-host domain: BUCKET.DOMAIN addresses a bucket.")
    ] = None,
) -> None:
    """Serve a directory tree as S3, alone (``aifactory up`` serves it too)."""
    from aifactory.objects import serve as serve_objects

    overrides: dict[str, Any] = {
        "objects_root": root,
        "host": host,
        "objects_port": port,
        "objects_domain": domain,
    }
    serve_objects(load_settings(**{k: v for k, v in overrides.items() if v is not None}))


@buckets_app.command("ls")
def buckets_ls() -> None:
    """List buckets with their owners and grants."""
    rows = _client().json("GET", "/api/buckets")["buckets"]
    table = Table("bucket", "tenant", "shared with", "created")
    for bucket in rows:
        grants = ", ".join(f"{t} ({a})" for t, a in sorted(bucket["grants"].items()))
        table.add_row(
            bucket["name"],
            bucket["tenant"] or "(no owner: admin only)",
            grants,
            str(bucket["created_at"])[:19],
        )
    console.print(table)


@buckets_app.command("create")
def buckets_create(
    name: Annotated[str, typer.Argument(help="Bucket name.")],
    tenant: Annotated[str, typer.Option(help="Tenant that owns the bucket.")],
) -> None:
    """Create a bucket owned by a tenant."""
    _client().json("POST", "/api/buckets", json={"name": name, "tenant": tenant})
    console.print(f"bucket [bold]{name}[/bold] created for tenant {tenant}")


@buckets_app.command("rm")
def buckets_rm(name: Annotated[str, typer.Argument(help="Bucket name.")]) -> None:
    """Delete an empty bucket."""
    _client().json("DELETE", f"/api/buckets/{name}")
    console.print(f"bucket [bold]{name}[/bold] deleted")


@buckets_app.command("share")
def buckets_share(
    name: Annotated[str, typer.Argument(help="Bucket name.")],
    tenant: Annotated[str, typer.Option(help="Tenant to share with.")],
    access: Annotated[str, typer.Option(help="read, write or none (to revoke).")] = "read",
) -> None:
    """Share a bucket with another tenant (read or write), or stop sharing it."""
    level = None if access == "none" else access
    _client().json("PUT", f"/api/buckets/{name}/grants", json={"tenant": tenant, "access": level})
    console.print(f"bucket [bold]{name}[/bold]: tenant {tenant} has {access} access")
