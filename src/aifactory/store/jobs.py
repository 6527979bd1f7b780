"""Batch jobs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from aifactory.store.queries import Queries
from aifactory.store.tables import JobRow, utcnow


class JobQueries(Queries):
    """Batch jobs."""

    def add_job(self, **fields: Any) -> None:
        """Insert a job row."""
        with self._session() as s:
            s.add(JobRow(**fields))

    def update_job(self, job_id: str, from_state: str | None = None, **fields: Any) -> bool:
        """Change some fields of a job (only if it is still in ``from_state``, when given)."""
        condition = JobRow.id == job_id
        if from_state is not None:
            condition = condition & (JobRow.state == from_state)
        with self._session() as s:
            result = s.execute(
                update(JobRow).where(condition).values(updated_at=utcnow(), **fields)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def job(self, job_id: str) -> JobRow | None:
        """One job by id."""
        with self._session() as s:
            return s.get(JobRow, job_id)

    def newest_job(self, name: str, tenant_id: int | None = None) -> JobRow | None:
        """The most recently submitted job called ``name`` (of one tenant, when given)."""
        query = select(JobRow).where(JobRow.name == name)
        if tenant_id is not None:
            query = query.where(JobRow.tenant_id == tenant_id)
        with self._session() as s:
            return s.scalar(query.order_by(JobRow.submitted_at.desc()).limit(1))

    def jobs(self, limit: int = 100, tenant_id: int | None = None) -> list[JobRow]:
        """The newest jobs, newest first, optionally of one tenant."""
        query = select(JobRow).order_by(JobRow.submitted_at.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(JobRow.tenant_id == tenant_id)
        with self._session() as s:
            return list(s.scalars(query))
