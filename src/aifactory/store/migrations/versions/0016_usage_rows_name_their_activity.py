"""Migration 0016: a usage row names the activity it charges (a job's id), when it charges one.

Lineage shows a job with the ledger rows that charged it; by name and end
time two jobs of one name could be taken for each other. Rows written
before this revision name none ("").

Revision ID: 0016
Revises: 0015
Created: 2026-12-07 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("activity", sa.String(length=128), server_default="", nullable=False)
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_column("activity")
