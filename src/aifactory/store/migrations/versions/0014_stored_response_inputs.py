"""Migration 0014: a stored response keeps its input items (``GET /v1/responses/{id}/input_items``).

Revision ID: 0014
Revises: 0013
Created: 2026-12-07 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("stored_responses") as table:
        table.add_column(sa.Column("input_items", sa.JSON(), nullable=False, server_default="[]"))
    op.create_index("ix_stored_responses_created_at", "stored_responses", ["created_at"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_stored_responses_created_at", table_name="stored_responses")
    with op.batch_alter_table("stored_responses") as table:
        table.drop_column("input_items")
