"""sample_batches is indexed by `received_at`: the sample retention forgets a samples event's id
once none of its samples is kept (the ids of the events of a dropped partition), oldest first, a
bounded number per sweep, without reading the whole table.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sample_batches_received_at", "sample_batches", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_sample_batches_received_at", table_name="sample_batches")
