"""The audit log: every admin action with who did it and when."""

from __future__ import annotations

import asyncio
from typing import Any

from aifactory.store import Store
from aifactory.tenancy.keys import Principal

__all__ = ["record_action"]


async def record_action(
    store: Store, actor: Principal, action: str, target: str, **detail: Any
) -> None:
    """Append ``action`` on ``target`` by ``actor`` to the audit log."""
    await asyncio.to_thread(
        store.add_audit,
        actor_key_id=actor.key_id,
        actor_tenant=actor.tenant,
        action=action,
        target=target,
        detail=detail,
    )
