"""Lineage of catalog entries: PROV-style edges between entries and the factory's activities.

An edge says that an activity (a job, a batch, a service, or a key that read
or wrote over S3) ``used`` an entry or that the entry ``wasGeneratedBy`` it.
Edges name the entry by its tenant and name, not by its row, so a job may
declare an output before the entry is first registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    and_,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from aifactory.store.catalog import CatalogEntryRow
from aifactory.store.queries import Queries
from aifactory.store.tables import (
    ApiKeyRow,
    Base,
    JobRow,
    TenantRow,
    UsageRow,
    UtcDateTime,
    utcnow,
)

__all__ = ["LineageEdge", "LineageQueries", "LineageRecord"]

_LEDGER_ROWS_PER_JOB = 1


class LineageRow(Base):
    """One edge: activity ``relation`` entry, deduplicated."""

    __tablename__ = "catalog_lineage"
    __table_args__ = (
        UniqueConstraint(
            "entry_tenant_id", "entry_name", "relation", "activity_kind", "activity_id"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    entry_name: Mapped[str] = mapped_column(String(64))
    # The entry's version used or made; null for an output not yet registered.
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    relation: Mapped[str] = mapped_column(String(16))  # used | generated
    activity_kind: Mapped[str] = mapped_column(String(16))  # job | batch | service | function | key
    activity_id: Mapped[str] = mapped_column(String(128))
    activity_tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    via: Mapped[str] = mapped_column(String(16))  # spec | s3
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class LineageEdge:
    """An edge to record."""

    entry_tenant_id: int
    entry_name: str
    version: int | None
    relation: str
    activity_kind: str
    activity_id: str
    activity_tenant_id: int
    via: str


@dataclass(frozen=True)
class LineageRecord:
    """A recorded edge, with the activity's tenant name and, for a job, its row and ledger."""

    edge: LineageEdge
    activity_tenant: str
    created_at: datetime
    job: dict[str, Any] | None


class LineageQueries(Queries):
    """Lineage edges."""

    def add_lineage(self, edges: list[LineageEdge]) -> int:
        """Record each edge not recorded yet; return how many were new."""
        added = 0
        for edge in edges:
            try:
                with self._session() as s:
                    s.add(LineageRow(**edge.__dict__))
                added += 1
            except IntegrityError:
                continue  # recorded before: edges are a set
        return added

    def settle_generated(self, tenant_id: int, name: str, version: int) -> None:
        """Outputs declared before their entry existed were generated as ``version``."""
        with self._session() as s:
            s.execute(
                update(LineageRow)
                .where(
                    LineageRow.entry_tenant_id == tenant_id,
                    LineageRow.entry_name == name,
                    LineageRow.relation == "generated",
                    LineageRow.version.is_(None),
                )
                .values(version=version)
            )

    def delete_lineage(self, tenant_id: int, name: str) -> None:
        """Forget every edge of an entry (it was deleted)."""
        with self._session() as s:
            s.execute(
                delete(LineageRow).where(
                    LineageRow.entry_tenant_id == tenant_id, LineageRow.entry_name == name
                )
            )

    def catalog_prefixes(self) -> list[tuple[str, str, int, str, int]]:
        """(bucket, prefix, tenant id, name, latest version) of every entry."""
        with self._session() as s:
            rows = s.execute(
                select(
                    CatalogEntryRow.bucket,
                    CatalogEntryRow.prefix,
                    CatalogEntryRow.tenant_id,
                    CatalogEntryRow.name,
                    CatalogEntryRow.latest,
                )
            ).all()
            return [tuple(row) for row in rows]  # type: ignore[misc]

    def key_activity(self, key_id: int) -> tuple[str, str]:
        """Whose S3 requests a key makes: the one service it is scoped to, else its own."""
        with self._session() as s:
            key = s.get(ApiKeyRow, key_id)
            if key is not None and key.services is not None and len(key.services) == 1:
                return "service", key.services[0]
            return "key", str(key_id)

    def lineage_of(self, tenant_id: int, name: str) -> list[LineageRecord]:
        """Every edge of an entry, oldest first; a job's with its row and ledger rows."""
        with self._session() as s:
            rows = s.execute(
                select(LineageRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == LineageRow.activity_tenant_id)
                .where(LineageRow.entry_tenant_id == tenant_id, LineageRow.entry_name == name)
                .order_by(LineageRow.id)
            ).all()
            return [
                LineageRecord(
                    _edge(row),
                    tenant,
                    row.created_at,
                    _job(s, row.activity_id) if row.activity_kind == "job" else None,
                )
                for row, tenant in rows
            ]


def _edge(row: LineageRow) -> LineageEdge:
    return LineageEdge(
        row.entry_tenant_id,
        row.entry_name,
        row.version,
        row.relation,
        row.activity_kind,
        row.activity_id,
        row.activity_tenant_id,
        row.via,
    )


def _job(s: Any, job_id: str) -> dict[str, Any] | None:
    """A job's state and the ledger rows that charged it (by its id)."""
    job = s.get(JobRow, job_id)
    if job is None:
        return None
    ledger: list[dict[str, Any]] = []
    if job.ended_at is not None and job.tenant_id is not None:
        # A row names its job's id; one written before rows did (activity "") is
        # matched by the job's name, backend and end time instead.
        charged = s.scalars(
            select(UsageRow)
            .where(
                UsageRow.tenant_id == job.tenant_id,
                UsageRow.kind == "allocation",
                UsageRow.model == job.name,
                UsageRow.endpoint == f"job.{job.backend}",
                or_(
                    UsageRow.activity == job.id,
                    and_(UsageRow.activity == "", UsageRow.created_at >= job.ended_at),
                ),
            )
            .order_by(UsageRow.id)
            .limit(_LEDGER_ROWS_PER_JOB)
        )
        ledger = [
            {
                "id": u.id,
                "created_at": u.created_at.isoformat(),
                "seconds": u.seconds,
                "node_hours": u.node_hours,
                "gpu_hours": u.gpu_hours,
            }
            for u in charged
        ]
    return {
        "id": job.id,
        "name": job.name,
        "backend": job.backend,
        "handle": job.handle,
        "state": job.state,
        "exit_code": job.exit_code,
        "submitted_at": job.submitted_at.isoformat(),
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "ledger": ledger,
    }
