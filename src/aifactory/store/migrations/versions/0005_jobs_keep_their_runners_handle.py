"""Migration 0005: a job's ``slurm_job_id`` becomes ``handle`` (a Kubernetes set's name too).

Renamed, not dropped and re-added, so every job keeps its handle; its index
follows. The jobs API still calls the value ``slurm_job_id``.

Revision ID: 0005
Revises: 0004
Created: 2026-11-28 13:24:04.551333
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _rename(old: str, new: str) -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(f"ix_jobs_{old}")
        batch_op.alter_column(old, new_column_name=new)
    # After the batch: within it, the index could name only the old column.
    op.create_index(f"ix_jobs_{new}", "jobs", [new], unique=False)


def upgrade() -> None:
    """Apply this revision."""
    _rename("slurm_job_id", "handle")


def downgrade() -> None:
    """Revert this revision."""
    _rename("handle", "slurm_job_id")
