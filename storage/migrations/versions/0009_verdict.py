"""A completed attempt records its validation's verdict (passed, failed, incomparable,
champion_unreadable) and why: only `passed` promotes by itself. A champion move records who or
what made it (`actor`). A version removed by the retention keeps its row (lineage, history, the
ledger) with `deleted_at`, and `artifact_deleted_at` once its artifact is gone from the store.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_events", sa.Column("verdict", sa.Text(), nullable=True))
    op.add_column("training_events", sa.Column("verdict_message", sa.Text(), nullable=True))
    # What completed before this revision: promoted means passed; not promoted means failed.
    op.execute(
        "UPDATE training_events SET verdict = CASE WHEN promoted THEN 'passed' ELSE 'failed' END "
        "WHERE status = 'completed' AND promoted IS NOT NULL"
    )
    op.create_check_constraint(
        op.f("ck_training_events_verdict_known"),
        "training_events",
        "verdict IN ('passed', 'failed', 'incomparable', 'champion_unreadable')",
    )
    op.add_column("champion_ledger", sa.Column("actor", sa.Text(), nullable=True))
    op.add_column("model_versions", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("model_versions", sa.Column("artifact_deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("model_versions", "artifact_deleted_at")
    op.drop_column("model_versions", "deleted_at")
    op.drop_column("champion_ledger", "actor")
    op.drop_constraint(op.f("ck_training_events_verdict_known"), "training_events", type_="check")
    op.drop_column("training_events", "verdict_message")
    op.drop_column("training_events", "verdict")
