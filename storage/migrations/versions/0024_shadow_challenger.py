"""A shadow challenger per model type: a version the watchers also score on the champion's inputs,
without serving it, so that the live view compares the two on the same outcomes.

- `shadow_versions`: the challenger of each model type an operator named (`fcl versions shadow`).
- `shadow_predictions`: what the challenger predicted for a served prediction (the same
  `prediction_id`, `shadow: true` on `fcl.predictions`), one per served prediction, idempotent by
  `event_id`; its outcome is the served prediction's.
- `shadow_figures`: per model type and window, the champion and the challenger over the same
  pairs, as the last live evaluation computed them.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shadow_versions",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("set_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("model_type", name="pk_shadow_versions"),
    )
    op.create_table(
        "shadow_predictions",
        sa.Column("prediction_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("prediction", postgresql.JSONB(), nullable=False),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("received_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", name="pk_shadow_predictions"),
        sa.UniqueConstraint("event_id", name="uq_shadow_predictions_event_id"),
    )
    op.create_index(
        "ix_shadow_predictions_model_type_version_occurred_at",
        "shadow_predictions",
        ["model_type", "version", "occurred_at"],
    )
    op.create_index("ix_shadow_predictions_received_at", "shadow_predictions", ["received_at"])
    op.create_table(
        "shadow_figures",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("window", sa.Text(), nullable=False),
        sa.Column("figures", postgresql.JSONB(), nullable=False),
        sa.Column("computed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("model_type", "window", name="pk_shadow_figures"),
    )


def downgrade() -> None:
    for table in ("shadow_figures", "shadow_predictions", "shadow_versions"):
        op.drop_table(table)
