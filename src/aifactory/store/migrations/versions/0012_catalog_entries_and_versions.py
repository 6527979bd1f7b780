"""Migration 0012: the data catalog's entries and their immutable versions.

Search uses each database's own full-text index over ``search_text``: an
FTS5 table kept by triggers on SQLite, a GIN index of its ``tsvector`` on
PostgreSQL.

Revision ID: 0012
Revises: 0011
Created: 2026-12-07 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "catalog_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.String(length=63), nullable=False),
        sa.Column("prefix", sa.String(length=1024), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("shared_with", sa.JSON(), nullable=False),
        sa.Column("latest", sa.Integer(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name"),
    )
    op.create_index("ix_catalog_entries_tenant_id", "catalog_entries", ["tenant_id"])
    op.create_table(
        "catalog_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["catalog_entries.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("entry_id", "version"),
    )
    op.create_index("ix_catalog_versions_entry_id", "catalog_versions", ["entry_id"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_SEARCH:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(
            "CREATE INDEX ix_catalog_entries_search ON catalog_entries "
            "USING gin (to_tsvector('simple', search_text))"
        )


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER catalog_search_{trigger}")
        op.execute("DROP TABLE catalog_search")
    else:
        op.drop_index("ix_catalog_entries_search", table_name="catalog_entries")
    op.drop_index("ix_catalog_versions_entry_id", table_name="catalog_versions")
    op.drop_table("catalog_versions")
    op.drop_index("ix_catalog_entries_tenant_id", table_name="catalog_entries")
    op.drop_table("catalog_entries")


_SQLITE_SEARCH = (
    "CREATE VIRTUAL TABLE catalog_search USING fts5("
    "search_text, content='catalog_entries', content_rowid='id')",
    "CREATE TRIGGER catalog_search_ai AFTER INSERT ON catalog_entries BEGIN "
    "INSERT INTO catalog_search(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER catalog_search_ad AFTER DELETE ON catalog_entries BEGIN "
    "INSERT INTO catalog_search(catalog_search, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER catalog_search_au AFTER UPDATE OF search_text ON catalog_entries BEGIN "
    "INSERT INTO catalog_search(catalog_search, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO catalog_search(rowid, search_text) VALUES (new.id, new.search_text); END",
)
