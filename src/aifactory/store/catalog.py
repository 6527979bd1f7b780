"""Catalog entries and their immutable versions (the data catalog's rows)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    column,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy import text as text_clause
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from aifactory.store.queries import Queries
from aifactory.store.tables import Base, TenantRow, UtcDateTime, utcnow

__all__ = ["CatalogEntryRecord", "CatalogQueries", "CatalogVersionRecord"]

_WORD = re.compile(r"[^\W_]+")


class CatalogEntryRow(Base):
    """A named dataset or model of a tenant: where it lives and who may see it."""

    __tablename__ = "catalog_entries"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    bucket: Mapped[str] = mapped_column(String(63))
    prefix: Mapped[str] = mapped_column(String(1024))
    visibility: Mapped[str] = mapped_column(String(16), default="private")
    shared_with: Mapped[list[str]] = mapped_column(JSON, default=list)
    latest: Mapped[int] = mapped_column(Integer, default=0)
    # The latest version's words, lower-cased, for the portable search.
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CatalogVersionRow(Base):
    """One immutable snapshot of an entry: its description and its files' checksums."""

    __tablename__ = "catalog_versions"
    __table_args__ = (UniqueConstraint("entry_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entries.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # title, description, license, keywords, creator, format, metadata
    description: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"path", "size", "sha256", "snapshot"}]
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class CatalogEntryRecord:
    """An entry with its owner's name."""

    id: int
    tenant: str
    tenant_id: int
    name: str
    kind: str
    bucket: str
    prefix: str
    visibility: str
    shared_with: tuple[str, ...]
    latest: int
    created_at: datetime


@dataclass(frozen=True)
class CatalogVersionRecord:
    """One version of an entry."""

    version: int
    description: dict[str, Any]
    files: list[dict[str, Any]]
    created_at: datetime


class CatalogQueries(Queries):
    """Catalog entries and versions."""

    def catalog_entry(self, tenant: str, name: str) -> CatalogEntryRecord | None:
        """One entry by its tenant's name and its own."""
        with self._session() as s:
            row = s.execute(
                select(CatalogEntryRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == CatalogEntryRow.tenant_id)
                .where(TenantRow.name == tenant, CatalogEntryRow.name == name)
            ).first()
            return None if row is None else _entry(*row)

    def catalog_entries(self, text: str) -> list[CatalogEntryRecord]:
        """Every entry whose latest version has words starting with each word of ``text``.

        Full text by the database's own index: FTS5 on SQLite, ``tsvector``
        on PostgreSQL. Words are runs of letters and digits; others are ignored.
        """
        query = select(CatalogEntryRow, TenantRow.name).join(
            TenantRow, TenantRow.id == CatalogEntryRow.tenant_id
        )
        words = _WORD.findall(text.lower())
        if words and self.engine.dialect.name == "postgresql":
            wanted = " & ".join(f"{word}:*" for word in words)
            query = query.where(
                func.to_tsvector(literal_column("'simple'"), CatalogEntryRow.search_text).op("@@")(
                    func.to_tsquery(literal_column("'simple'"), wanted)
                )
            )
        elif words:
            wanted = " ".join(f'"{word}"*' for word in words)
            matching = text_clause(
                "SELECT rowid FROM catalog_search WHERE catalog_search MATCH :wanted"
            ).bindparams(wanted=wanted)
            query = query.where(CatalogEntryRow.id.in_(matching.columns(column("rowid"))))
        with self._session() as s:
            rows = s.execute(query.order_by(TenantRow.name, CatalogEntryRow.name)).all()
            return [_entry(*row) for row in rows]

    def catalog_version(self, entry_id: int, version: int) -> CatalogVersionRecord | None:
        """One version of an entry."""
        with self._session() as s:
            row = s.execute(
                select(CatalogVersionRow).where(
                    CatalogVersionRow.entry_id == entry_id, CatalogVersionRow.version == version
                )
            ).scalar_one_or_none()
            return None if row is None else _version(row)

    def catalog_versions(self, entry_id: int) -> list[CatalogVersionRecord]:
        """Every version of an entry, oldest first."""
        with self._session() as s:
            rows = s.execute(
                select(CatalogVersionRow)
                .where(CatalogVersionRow.entry_id == entry_id)
                .order_by(CatalogVersionRow.version)
            ).scalars()
            return [_version(row) for row in rows]

    def catalog_kept_files(self, tenant_id: int) -> dict[str, int]:
        """The SHA-256 and size of each kept file that a version of the tenant's entries lists."""
        with self._session() as s:
            listed = s.execute(
                select(CatalogVersionRow.files)
                .join(CatalogEntryRow, CatalogEntryRow.id == CatalogVersionRow.entry_id)
                .where(CatalogEntryRow.tenant_id == tenant_id)
            ).scalars()
            return {f["sha256"]: int(f["size"]) for files in listed for f in files if f.get("kept")}

    def delete_catalog_entry(self, entry_id: int) -> dict[str, int]:
        """Delete an entry and its versions; the kept files no other version lists.

        Returns their SHA-256 and size: the caller frees them.
        """
        with self._session() as s:
            versions = s.execute(
                select(CatalogVersionRow.files).where(CatalogVersionRow.entry_id == entry_id)
            ).scalars()
            kept = {
                f["sha256"]: int(f["size"]) for files in versions for f in files if f.get("kept")
            }
            s.execute(delete(CatalogVersionRow).where(CatalogVersionRow.entry_id == entry_id))
            s.execute(delete(CatalogEntryRow).where(CatalogEntryRow.id == entry_id))
            # Another entry's version may keep the same bytes (same hash): those stay.
            for files in s.execute(select(CatalogVersionRow.files)).scalars():
                for listed in files:
                    kept.pop(listed["sha256"], None)
            return kept

    def save_catalog_entry(
        self,
        tenant_id: int,
        name: str,
        where: dict[str, str],
        visibility: str,
        shared_with: list[str],
        description: dict[str, Any],
        files: list[dict[str, Any]],
        search_text: str,
    ) -> int:
        """Create or update an entry; add a version unless the latest one is the same.

        ``where`` holds ``kind``, ``bucket`` and ``prefix``. Returns the
        entry's latest version number after the call.
        """
        arguments = (tenant_id, name, where, visibility, shared_with, description, files)
        try:
            return self._save_catalog_entry(*arguments, search_text)
        except IntegrityError:
            # Another registration created the entry first: version on top of it.
            return self._save_catalog_entry(*arguments, search_text)

    def _save_catalog_entry(
        self,
        tenant_id: int,
        name: str,
        where: dict[str, str],
        visibility: str,
        shared_with: list[str],
        description: dict[str, Any],
        files: list[dict[str, Any]],
        search_text: str,
    ) -> int:
        with self._session() as s:
            entry = s.execute(
                select(CatalogEntryRow)
                .where(CatalogEntryRow.tenant_id == tenant_id, CatalogEntryRow.name == name)
                .with_for_update()
            ).scalar_one_or_none()
            if entry is None:
                entry = CatalogEntryRow(tenant_id=tenant_id, name=name, latest=0, **where)
                s.add(entry)
                s.flush()
            else:
                entry.kind, entry.bucket, entry.prefix = (
                    where["kind"],
                    where["bucket"],
                    where["prefix"],
                )
            entry.visibility = visibility
            entry.shared_with = shared_with
            latest = s.execute(
                select(CatalogVersionRow).where(
                    CatalogVersionRow.entry_id == entry.id,
                    CatalogVersionRow.version == entry.latest,
                )
            ).scalar_one_or_none()
            if latest is None or not _same(latest, description, files):
                entry.latest += 1
                s.add(
                    CatalogVersionRow(
                        entry_id=entry.id,
                        version=entry.latest,
                        description=description,
                        files=files,
                    )
                )
                entry.search_text = search_text
            return entry.latest


def _same(row: CatalogVersionRow, description: dict[str, Any], files: list[dict[str, Any]]) -> bool:
    def content(listed: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(f["path"], f["sha256"]) for f in listed]

    return row.description == description and content(row.files) == content(files)


def _entry(row: CatalogEntryRow, tenant: str) -> CatalogEntryRecord:
    return CatalogEntryRecord(
        id=row.id,
        tenant=tenant,
        tenant_id=row.tenant_id,
        name=row.name,
        kind=row.kind,
        bucket=row.bucket,
        prefix=row.prefix,
        visibility=row.visibility,
        shared_with=tuple(row.shared_with or ()),
        latest=row.latest,
        created_at=row.created_at,
    )


def _version(row: CatalogVersionRow) -> CatalogVersionRecord:
    return CatalogVersionRecord(
        version=row.version,
        description=dict(row.description),
        files=list(row.files),
        created_at=row.created_at,
    )
