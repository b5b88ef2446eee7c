"""A completed attempt records its validation's verdict (passed, failed, incomparable,
champion_unreadable) and why: only `passed` promotes by itself.

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


def downgrade() -> None:
    op.drop_constraint(op.f("ck_training_events_verdict_known"), "training_events", type_="check")
    op.drop_column("training_events", "verdict_message")
    op.drop_column("training_events", "verdict")
