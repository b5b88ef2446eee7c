"""A version keeps its training info (the manifest's `info`: for a goal model the chosen family and
every family's cross-validated score) and the profile of the data it was trained from; a training
event keeps the drift of its validation (the candidate's data against the champion's).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_versions",
        sa.Column("info", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.add_column("model_versions", sa.Column("profile", postgresql.JSONB(), nullable=True))
    op.add_column("training_events", sa.Column("drift", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("training_events", "drift")
    op.drop_column("model_versions", "profile")
    op.drop_column("model_versions", "info")
