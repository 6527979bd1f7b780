"""Lineage: which jobs, batches, services and keys produced an entry, and which used it.

Edges follow W3C PROV: an activity ``prov:used`` an entity (an entry's
version), and an entity ``prov:wasGeneratedBy`` an activity. They come from
specs (a job's declared ``inputs`` and ``outputs``, a service's ``catalog:``
model) and from S3 reads and writes under an entry's prefix.

Who sees what: an entry's lineage is shown only to whoever may see the entry
(404 otherwise). Within it, an activity is named (its id, its job row and
ledger rows) only to its own tenant and the site's admins; other tenants'
activities are counted, never named.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aifactory.catalog.service import Catalog
from aifactory.store import LineageEdge, LineageRecord, Store
from aifactory.tenancy import Principal

__all__ = ["PROV_RELATIONS", "Lineage", "Use"]

PROV_RELATIONS = {"used": "prov:used", "generated": "prov:wasGeneratedBy"}


@dataclass(frozen=True)
class Use:
    """An entry an activity reads (``used``) or writes (``generated``), at a version if known."""

    entry_tenant_id: int
    entry_name: str
    version: int | None
    relation: str

    def edge(self, kind: str, activity_id: str, tenant_id: int, via: str) -> LineageEdge:
        """This use as an edge of the activity ``kind``/``activity_id`` of ``tenant_id``."""
        return LineageEdge(
            self.entry_tenant_id,
            self.entry_name,
            self.version,
            self.relation,
            kind,
            activity_id,
            tenant_id,
            via,
        )


class Lineage:
    """Records lineage edges and shows an entry's.

    Args:
        store: Where edges live.
        catalog: Who may see which entry.
    """

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self._store = store
        self._catalog = catalog

    async def record(
        self, uses: list[Use], kind: str, activity_id: str, tenant_id: int, via: str = "spec"
    ) -> None:
        """Record that the activity read or wrote each of ``uses`` (once each)."""
        edges = [use.edge(kind, activity_id, tenant_id, via) for use in uses]
        if edges:
            await asyncio.to_thread(self._store.add_lineage, edges)

    async def show(self, caller: Principal | None, tenant: str, name: str) -> dict[str, Any]:
        """What generated the entry and what used it, as far as ``caller`` may know.

        Raises:
            NotFound: no such entry, or one the caller may not see.
        """
        view = await self._catalog.view(caller, tenant, name)
        records = await asyncio.to_thread(
            self._store.lineage_of, view.entry.tenant_id, view.entry.name
        )
        shown: dict[str, list[dict[str, Any]]] = {"generated": [], "used": []}
        others = {"generated": 0, "used": 0}
        for record in records:
            relation = record.edge.relation
            if _may_name(caller, record):
                shown[relation].append(_activity(record))
            else:
                others[relation] += 1
        return {
            "entry": f"{view.entry.tenant}/{view.entry.name}",
            "latest": view.entry.latest,
            "generated_by": shown["generated"],
            "used_by": shown["used"],
            "other_tenants": {"generated_by": others["generated"], "used_by": others["used"]},
        }


def _may_name(caller: Principal | None, record: LineageRecord) -> bool:
    if caller is None:
        return False
    return caller.is_admin or caller.tenant_id == record.edge.activity_tenant_id


def _activity(record: LineageRecord) -> dict[str, Any]:
    edge = record.edge
    shown: dict[str, Any] = {
        "relation": PROV_RELATIONS[edge.relation],
        "version": edge.version,
        "activity": {"kind": edge.activity_kind, "id": edge.activity_id},
        "tenant": record.activity_tenant,
        "via": edge.via,
        "recorded_at": record.created_at.isoformat(),
    }
    if record.job is not None:
        shown["job"] = record.job
    return shown
