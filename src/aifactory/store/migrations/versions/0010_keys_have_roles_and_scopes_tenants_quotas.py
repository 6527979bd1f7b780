"""Migration 0010: keys have roles and scopes; tenants have quotas.

The old ``user`` role becomes ``member`` (what such keys could do is what a
member may do, and more: deploying is new).

Revision ID: 0010
Revises: 0009
Created: 2026-12-07 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("services", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("buckets", sa.JSON(), nullable=True))
    op.execute("UPDATE api_keys SET role = 'member' WHERE role = 'user'")
    op.create_table(
        "quotas",
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("replicas", sa.Integer(), nullable=True),
        sa.Column("cpus", sa.Integer(), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=True),
        sa.Column("memory_gib", sa.Float(), nullable=True),
        sa.Column("concurrent_jobs", sa.Integer(), nullable=True),
        sa.Column("buckets", sa.Integer(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("quotas")
    op.execute("UPDATE api_keys SET role = 'user' WHERE role <> 'admin'")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("buckets")
        batch_op.drop_column("services")
