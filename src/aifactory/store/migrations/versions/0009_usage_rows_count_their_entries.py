"""Migration 0009: a usage row counts the entries it sums (the ledger aggregates per flush).

Rows written before this revision are one entry each.

Revision ID: 0009
Revises: 0008
Created: 2026-12-06 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entries", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("usage", schema=None) as batch_op:
        batch_op.drop_column("entries")
