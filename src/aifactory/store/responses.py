"""Stored responses of the Responses API, each of one tenant, kept for the site's retention."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete

from aifactory.store.queries import Queries
from aifactory.store.tables import StoredResponseRow


class ResponseQueries(Queries):
    """Keep, find and forget a tenant's responses; sweep those past the retention."""

    def add_response(
        self,
        response_id: str,
        tenant_id: int,
        document: dict[str, Any],
        conversation: list[dict[str, Any]],
        input_items: list[dict[str, Any]] | None = None,
    ) -> None:
        """Keep a response, the conversation it ends and its request's input items."""
        with self._session() as s:
            s.add(
                StoredResponseRow(
                    id=response_id,
                    tenant_id=tenant_id,
                    document=document,
                    conversation=conversation,
                    input_items=input_items or [],
                )
            )

    def stored_response(
        self, response_id: str, tenant_id: int, kept_since: datetime | None = None
    ) -> StoredResponseRow | None:
        """The response ``response_id`` if it is ``tenant_id``'s (and made after ``kept_since``)."""
        with self._session() as s:
            row = s.get(StoredResponseRow, response_id)
        if row is None or row.tenant_id != tenant_id:
            return None
        return row if kept_since is None or row.created_at > kept_since else None

    def delete_response(self, response_id: str, tenant_id: int) -> bool:
        """Forget ``tenant_id``'s response ``response_id``; False when it had none such."""
        with self._session() as s:
            result = s.execute(
                delete(StoredResponseRow).where(
                    StoredResponseRow.id == response_id, StoredResponseRow.tenant_id == tenant_id
                )
            )
        return bool(getattr(result, "rowcount", 0))

    def delete_responses_before(self, cutoff: datetime) -> int:
        """Forget every response made before ``cutoff``; how many there were."""
        with self._session() as s:
            result = s.execute(
                delete(StoredResponseRow).where(StoredResponseRow.created_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)
