"""``aif catalog add|show|search``: the data catalog from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aifactory.cli.client import AdminClient
from aifactory.config import load_settings

catalog_app = typer.Typer(
    help="Register, show and search datasets and models.", no_args_is_help=True
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add the ``catalog`` sub-app to ``app``."""
    app.add_typer(catalog_app, name="catalog")


def _client() -> AdminClient:
    return AdminClient(load_settings())


@catalog_app.command("add")
def catalog_add(
    where: Annotated[str, typer.Argument(help="BUCKET/PREFIX holding the files.")],
    title: Annotated[str | None, typer.Option(help="Title (else catalog.yaml's).")] = None,
    license: Annotated[
        str | None, typer.Option(help="License, an SPDX id such as CC-BY-4.0.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Entry name (default: the prefix's last part).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What it is.")] = None,
    keyword: Annotated[list[str] | None, typer.Option(help="A keyword (repeat for more).")] = None,
    creator: Annotated[str | None, typer.Option(help="Who made it.")] = None,
    format: Annotated[str | None, typer.Option(help="Format (default: from the files).")] = None,
    kind: Annotated[str | None, typer.Option(help="dataset or model.")] = None,
    visibility: Annotated[str | None, typer.Option(help="private, shared or public.")] = None,
    share: Annotated[
        list[str] | None, typer.Option(help="A tenant to share with (repeat).")
    ] = None,
) -> None:
    """Register a prefix as a catalog entry; a changed file or word makes a new version."""
    bucket, _, prefix = where.partition("/")
    fields: dict[str, Any] = {
        "title": title,
        "license": license,
        "name": name,
        "description": description,
        "keywords": keyword,
        "creator": creator,
        "format": format,
        "kind": kind,
        "visibility": visibility,
        "shared_with": share,
    }
    body = {"bucket": bucket, "prefix": prefix, **{k: v for k, v in fields.items() if v}}
    entry = _client().json("POST", "/api/catalog", json=body)
    console.print(
        f"[bold]{entry['id']}[/bold] version {entry['version']}: "
        f"{len(entry['files'])} files, {entry['bytes']} bytes ({entry['visibility']})"
    )


@catalog_app.command("show")
def catalog_show(
    entry: Annotated[str, typer.Argument(help="TENANT/NAME, or TENANT/NAME@VERSION.")],
) -> None:
    """Show an entry's description, files and versions."""
    path, _, version = entry.partition("@")
    url = f"/api/catalog/{path}" + (f"/versions/{version}" if version else "")
    found = _client().json("GET", url)
    console.print(f"[bold]{found['id']}[/bold] v{found['version']} (latest {found['latest']})")
    console.print(f"{found['title']} — {found['license']} — {found['format'] or '?'}")
    table = Table("file", "bytes", "sha256")
    for listed in found["files"]:
        table.add_row(listed["path"], str(listed["size"]), listed["sha256"])
    console.print(table)


@catalog_app.command("search")
def catalog_search(
    text: Annotated[str, typer.Argument(help="Words to look for.")] = "",
    format: Annotated[str, typer.Option(help="Only this format.")] = "",
    license: Annotated[str, typer.Option(help="Only this license.")] = "",
    tenant: Annotated[str, typer.Option(help="Only this tenant's entries.")] = "",
    keyword: Annotated[str, typer.Option(help="Only entries with this keyword.")] = "",
) -> None:
    """Search the entries this key may see, by words and facets."""
    params = {"q": text, "format": format, "license": license, "tenant": tenant, "keyword": keyword}
    found = _client().json("GET", "/api/catalog", params={k: v for k, v in params.items() if v})
    table = Table("entry", "version", "kind", "title", "format", "license", "visibility")
    for entry in found["entries"]:
        table.add_row(
            entry["id"],
            str(entry["version"]),
            entry["kind"],
            entry["title"],
            entry["format"],
            entry["license"],
            entry["visibility"],
        )
    console.print(table)


@catalog_app.command("lineage")
def catalog_lineage(
    entry: Annotated[str, typer.Argument(help="TENANT/NAME.")],
) -> None:
    """Show what produced an entry and what used it: jobs (with ledger rows), services, keys."""
    found = _client().json("GET", f"/api/catalog/{entry}/lineage")
    table = Table("relation", "version", "activity", "tenant", "via", "job state", "ledger")
    for side in ("generated_by", "used_by"):
        for edge in found[side]:
            activity = edge["activity"]
            job = edge.get("job") or {}
            ledger = ", ".join(
                f"#{row['id']} {row['node_hours']:.6f} node-h" for row in job.get("ledger", [])
            )
            table.add_row(
                edge["relation"],
                "" if edge["version"] is None else str(edge["version"]),
                f"{activity['kind']} {activity['id']}",
                edge["tenant"],
                edge["via"],
                job.get("state", ""),
                ledger,
            )
    console.print(f"[bold]{found['entry']}[/bold] (latest version {found['latest']})")
    console.print(table)
    hidden = found["other_tenants"]
    if hidden["generated_by"] or hidden["used_by"]:
        console.print(
            f"and activities of other tenants: {hidden['generated_by']} generated it, "
            f"{hidden['used_by']} used it"
        )


@catalog_app.command("delete")
def catalog_delete(
    entry: Annotated[str, typer.Argument(help="TENANT/NAME.")],
) -> None:
    """Delete an entry and all its versions (the bucket's files stay)."""
    done = _client().json("DELETE", f"/api/catalog/{entry}")
    console.print(
        f"deleted {done['deleted']}: {done['versions']} versions, "
        f"{done['freed_bytes']} kept bytes freed"
    )
