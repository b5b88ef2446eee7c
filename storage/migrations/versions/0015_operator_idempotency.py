"""An operator's champion moves (promote, rollback) remember their `Idempotency-Key`: a retried
or doubled call answers the first move again instead of moving twice (v3 -> v2 -> v1).

`operator_requests` keeps the key, a digest of the request (path and body) and the ledger row the
first call made; rows older than the retention's horizon are deleted by the retention sweep.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_requests",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_operator_requests")),
    )
    op.create_index("ix_operator_requests_created_at", "operator_requests", ["created_at"])


def downgrade() -> None:
    op.drop_table("operator_requests")
