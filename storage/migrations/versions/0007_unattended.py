"""Unattended operation: datasets keep their samples' shape, the outbox parks what it cannot send.

- `datasets.sample_shape`: what every sample of a dataset shares (state length, feature names),
  set by the first samples stored; later samples of another shape are dead-lettered.
- `outbox.attempts`, `last_error`, `parked_at`: a row the broker refused too often is parked
  (kept with its error, counted in /metrics) and the relay goes on with the rows after it.
  The pending index skips parked rows; published rows get an index for their removal.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("sample_shape", postgresql.JSONB(), nullable=True))
    op.add_column("outbox", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("outbox", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index(
        "ix_outbox_pending", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL")
    )
    op.create_index(
        "ix_outbox_published", "outbox", ["published_at"], postgresql_where=sa.text("published_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_published", table_name="outbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index("ix_outbox_pending", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL"))
    op.drop_column("outbox", "parked_at")
    op.drop_column("outbox", "last_error")
    op.drop_column("outbox", "attempts")
    op.drop_column("datasets", "sample_shape")
