"""A job keeps the trace context of the span that admitted it (W3C `traceparent`), so that the
trainer continues that trace and every event of the job carries it (fcl.contract.tracing).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("training_jobs", "trace_context")
