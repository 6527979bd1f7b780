"""Migration 0006: a replica records the fingerprint of the spec it was started with.

A redeployed service with a changed spec rolls its replicas over to the new
one; replicas from before this revision have no fingerprint and are left be.

Revision ID: 0006
Revises: 0005
Created: 2026-11-28 16:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("spec_hash", sa.String(length=16), server_default="", nullable=False)
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_column("spec_hash")
