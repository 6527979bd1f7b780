"""The dashboard's seam to object storage, which is built elsewhere.

The buckets page talks only to ``ObjectBrowser``; until a control plane has
object storage, it passes None and the page says storage is not enabled.
"""

from __future__ import annotations

from typing import Any, Protocol

from aifactory.tenancy import Principal

NOT_ENABLED = "object storage not enabled"


class ObjectBrowser(Protocol):
    """What the buckets page needs from object storage."""

    async def buckets(self, tenant: str | None) -> list[dict[str, Any]]:
        """Buckets of ``tenant`` (None: every tenant's), each with ``name`` and ``objects``.

        Args:
            tenant: The tenant whose buckets to list, or None for an admin.

        Returns:
            One dict per bucket, at least ``{"name": str, "objects": int}``.
        """
        ...


async def buckets_view(objects: ObjectBrowser | None, caller: Principal) -> dict[str, Any]:
    """The buckets the caller may see, or a note that storage is not enabled."""
    if objects is None:
        return {"enabled": False, "message": NOT_ENABLED, "buckets": []}
    tenant = None if caller.is_admin else caller.tenant
    return {"enabled": True, "message": "", "buckets": await objects.buckets(tenant)}
