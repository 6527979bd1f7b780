"""Migration 0015: lineage of catalog entries (PROV-style edges to jobs, batches, services, keys).

Revision ID: 0015
Revises: 0014
Created: 2026-12-07 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "catalog_lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_tenant_id", sa.Integer(), nullable=False),
        sa.Column("entry_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("activity_kind", sa.String(length=16), nullable=False),
        sa.Column("activity_id", sa.String(length=128), nullable=False),
        sa.Column("activity_tenant_id", sa.Integer(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["entry_tenant_id"], ["tenants.id"]),
        sa.ForeignKeyConstraint(["activity_tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "entry_tenant_id", "entry_name", "relation", "activity_kind", "activity_id"
        ),
    )
    op.create_index("ix_catalog_lineage_entry_tenant_id", "catalog_lineage", ["entry_tenant_id"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_catalog_lineage_entry_tenant_id", table_name="catalog_lineage")
    op.drop_table("catalog_lineage")
