"""Batches and their files (the OpenAI Files and Batches API)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from aifactory.store.queries import Queries
from aifactory.store.tables import BatchFileRow, BatchRow, utcnow


class BatchQueries(Queries):
    """Batch files and batches, each of one tenant."""

    def add_batch_file(self, **fields: Any) -> BatchFileRow:
        """Insert a file row."""
        row = BatchFileRow(**fields)
        with self._session() as s:
            s.add(row)
        return row

    def batch_file(self, file_id: str, tenant_id: int | None) -> BatchFileRow | None:
        """One file by id, if it is ``tenant_id``'s (None: any tenant's)."""
        with self._session() as s:
            row = s.get(BatchFileRow, file_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            return None
        return row

    def batch_files(
        self, tenant_id: int | None, purpose: str = "", limit: int = 100
    ) -> list[BatchFileRow]:
        """A tenant's files, newest first (None: every tenant's)."""
        query = select(BatchFileRow).order_by(BatchFileRow.created_at.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(BatchFileRow.tenant_id == tenant_id)
        if purpose:
            query = query.where(BatchFileRow.purpose == purpose)
        with self._session() as s:
            return list(s.scalars(query))

    def delete_batch_file(self, file_id: str) -> None:
        """Forget a file row."""
        with self._session() as s:
            s.execute(delete(BatchFileRow).where(BatchFileRow.id == file_id))

    def add_batch(self, **fields: Any) -> BatchRow:
        """Insert a batch row."""
        row = BatchRow(**fields)
        with self._session() as s:
            s.add(row)
        return row

    def batch(self, batch_id: str, tenant_id: int | None = None) -> BatchRow | None:
        """One batch by id, if it is ``tenant_id``'s (None: any tenant's)."""
        with self._session() as s:
            row = s.get(BatchRow, batch_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            return None
        return row

    def batches(
        self,
        tenant_id: int | None,
        limit: int = 100,
        after: str = "",
        statuses: tuple[str, ...] = (),
    ) -> list[BatchRow]:
        """Batches newest first (of one tenant unless None), after the batch ``after``."""
        query = select(BatchRow).order_by(BatchRow.created_at.desc(), BatchRow.id.desc())
        if tenant_id is not None:
            query = query.where(BatchRow.tenant_id == tenant_id)
        if statuses:
            query = query.where(BatchRow.status.in_(statuses))
        if after:
            anchor = self.batch(after, tenant_id)
            if anchor is not None:
                query = query.where(BatchRow.created_at <= anchor.created_at, BatchRow.id != after)
        with self._session() as s:
            return list(s.scalars(query.limit(limit)))

    def update_batch(self, batch_id: str, from_status: str | None = None, **fields: Any) -> bool:
        """Change some fields of a batch (only while it is in ``from_status``, when given)."""
        condition = BatchRow.id == batch_id
        if from_status is not None:
            condition = condition & (BatchRow.status == from_status)
        with self._session() as s:
            result = s.execute(
                update(BatchRow).where(condition).values(updated_at=utcnow(), **fields)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]
