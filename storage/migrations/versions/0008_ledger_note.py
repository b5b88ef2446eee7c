"""A champion move may carry a note: the operator's reason for a manual promote.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("champion_ledger", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("champion_ledger", "note")
