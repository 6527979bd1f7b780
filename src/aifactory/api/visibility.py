"""What a key may see of the deployed services: the tenant rule of every read route.

An admin key sees everything. A tenant key sees its own tenant's services,
pools and agents in full; of another tenant's, only a public (non-private)
Service or Agent, and only its name, kind and models. A key scoped to named
services sees only those. Anything else of
another tenant answers 404 as if it did not exist, so a name is never
confirmed to a tenant that may not see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aifactory.errors import NotFound
from aifactory.store import ServiceRow, Store
from aifactory.tenancy import Principal

__all__ = ["ServiceVisibility"]

_PUBLIC_FIELDS = ("name", "kind", "models")


class ServiceVisibility:
    """Filters and trims service views for one caller.

    Args:
        store: Where each service's tenant and spec are kept.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def owned(self, caller: Principal, name: str, missing: NotFound) -> None:
        """Returns when ``caller`` may see all of ``name``; raises ``missing`` otherwise."""
        row = await asyncio.to_thread(self._store.service, name)
        if row is None or not _owns(caller, row):
            raise missing

    async def view(self, caller: Principal, name: str, full: Mapping[str, Any]) -> dict[str, Any]:
        """``full`` (the view of ``name``) as ``caller`` may see it.

        Raises:
            NotFound: ``caller`` may not see the service at all.
        """
        row = await asyncio.to_thread(self._store.service, name)
        if row is not None and _owns(caller, row):
            return dict(full)
        if row is not None and _public(caller, row):
            return _trimmed(full)
        raise NotFound(f"service {name!r} does not exist.", fix="see `aifactory services`")

    async def views(
        self, caller: Principal, summaries: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The ``summaries`` (one per service) that ``caller`` may see, trimmed to what it may."""
        if caller.is_admin:
            return summaries
        rows = {row.name: row for row in await asyncio.to_thread(self._store.services)}
        seen = []
        for summary in summaries:
            row = rows.get(summary["name"])
            if row is not None and _owns(caller, row):
                seen.append(summary)
            elif row is not None and _public(caller, row):
                seen.append(_trimmed(summary))
        return seen

    async def owned_names(self, caller: Principal) -> set[str] | None:
        """The services ``caller`` sees in full; None for all of them (an admin)."""
        if caller.is_admin:
            return None
        rows = await asyncio.to_thread(self._store.services)
        return {row.name for row in rows if _owns(caller, row)}


def _owns(caller: Principal, row: ServiceRow) -> bool:
    if caller.is_admin:
        return True
    return (
        row.tenant_id is not None
        and row.tenant_id == caller.tenant_id
        and caller.reaches_service(row.name)
    )


def _public(caller: Principal, row: ServiceRow) -> bool:
    return (
        row.spec.get("kind", "Service") != "FunctionPool"
        and not row.spec.get("private")
        and caller.reaches_service(row.name)
    )


def _trimmed(view: Mapping[str, Any]) -> dict[str, Any]:
    return {field: view[field] for field in _PUBLIC_FIELDS if field in view}
