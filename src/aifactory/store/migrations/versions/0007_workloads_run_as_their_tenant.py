"""Migration 0007: tenants map to a Unix user; replicas and jobs record who they run as.

Revision ID: 0007
Revises: 0006
Created: 2026-12-06 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unix_user", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("unix_group", sa.String(length=32), nullable=True))
    for table in ("replicas", "jobs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("run_as", sa.String(length=32), server_default="", nullable=False)
            )


def downgrade() -> None:
    """Revert this revision."""
    for table in ("jobs", "replicas"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("run_as")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("unix_group")
        batch_op.drop_column("unix_user")
