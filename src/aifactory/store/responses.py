"""Stored responses of the Responses API, each of one tenant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from aifactory.store.queries import Queries
from aifactory.store.tables import StoredResponseRow


class ResponseQueries(Queries):
    """Keep, find and forget a tenant's responses."""

    def add_response(
        self,
        response_id: str,
        tenant_id: int,
        document: dict[str, Any],
        conversation: list[dict[str, Any]],
    ) -> None:
        """Keep a response and the conversation it ends."""
        with self._session() as s:
            s.add(
                StoredResponseRow(
                    id=response_id,
                    tenant_id=tenant_id,
                    document=document,
                    conversation=conversation,
                )
            )

    def stored_response(self, response_id: str, tenant_id: int) -> StoredResponseRow | None:
        """The response ``response_id`` if it is ``tenant_id``'s."""
        with self._session() as s:
            row = s.get(StoredResponseRow, response_id)
        return row if row is not None and row.tenant_id == tenant_id else None

    def delete_response(self, response_id: str, tenant_id: int) -> bool:
        """Forget ``tenant_id``'s response ``response_id``; False when it had none such."""
        with self._session() as s:
            result = s.execute(
                delete(StoredResponseRow).where(
                    StoredResponseRow.id == response_id, StoredResponseRow.tenant_id == tenant_id
                )
            )
        return bool(getattr(result, "rowcount", 0))
