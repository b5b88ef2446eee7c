"""A dataset's shape may evolve: an event that adds features starts a new shape version, and
trainings use the samples of the newest version only (`shape_from_id`: the samples after it).
An operator may also reset a dataset's shape (`fcl datasets reset-shape`): the next event's shape
becomes a new version.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("datasets", sa.Column("shape_version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.add_column("datasets", sa.Column("shape_from_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("datasets", "shape_from_id")
    op.drop_column("datasets", "shape_version")
