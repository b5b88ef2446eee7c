"""Predictions and outcomes (`fcl.predictions`, `fcl.outcomes`): the pairs of each served version,
joined as they arrive, and its live figures.

- `predictions`: one row a prediction, idempotent by `event_id` and by `prediction_id`; its
  outcome is written into the row when it arrives (the first one; later ones are counted in
  `repeated_outcomes`).
- `waiting_outcomes`: outcomes whose prediction has not arrived (yet), joined when it does.
- `live_versions`: the versions predictions were logged for (what the live evaluation visits).
- `live_figures`: per version and window, what the last evaluation computed.
- `live_turn`: one row; a trainer worker takes a round of the evaluation by moving it.
- `retrain_reasons`: each reason to retrain a champion that fired (a live drop, input drift, age),
  once per version, window and kind, with the job it queued.
- `reason` on `training_jobs`, `job_triggers` and `training_events`: why a job was queued
  (`{"kind": "threshold" | "operator" | "live_drop" | "input_drift" | "champion_age", ...figures}`).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("prediction_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("inputs", postgresql.JSONB(), nullable=True),
        sa.Column("inputs_digest", sa.Text(), nullable=True),
        sa.Column("prediction", postgresql.JSONB(), nullable=False),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("received_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("outcome", postgresql.JSONB(), nullable=True),
        sa.Column("outcome_event_id", sa.Text(), nullable=True),
        sa.Column("outcome_occurred_at", _TS, nullable=True),
        sa.Column("outcome_received_at", _TS, nullable=True),
        sa.Column("repeated_outcomes", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", name="pk_predictions"),
        sa.UniqueConstraint("event_id", name="uq_predictions_event_id"),
    )
    op.create_index(
        "ix_predictions_model_type_version_occurred_at", "predictions", ["model_type", "version", "occurred_at"]
    )
    op.create_index("ix_predictions_received_at", "predictions", ["received_at"])
    op.create_table(
        "waiting_outcomes",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("prediction_id", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=True),
        sa.Column("outcome", postgresql.JSONB(), nullable=False),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("received_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_waiting_outcomes"),
    )
    op.create_index("ix_waiting_outcomes_prediction_id", "waiting_outcomes", ["prediction_id"])
    op.create_index("ix_waiting_outcomes_received_at", "waiting_outcomes", ["received_at"])
    op.create_table(
        "live_figures",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("window", sa.Text(), nullable=False),
        sa.Column("figures", postgresql.JSONB(), nullable=False),
        sa.Column("computed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("model_type", "version", "window", name="pk_live_figures"),
    )
    op.create_table(
        "live_versions",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_prediction_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("model_type", "version", name="pk_live_versions"),
    )
    op.create_table(
        "live_turn",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("taken_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_live_turn"),
    )
    op.execute("INSERT INTO live_turn (id, taken_at) VALUES (1, '-infinity')")
    op.create_table(
        "retrain_reasons",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("window", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("figures", postgresql.JSONB(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("fired_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("model_type", "version", "window", "kind", name="pk_retrain_reasons"),
    )
    for table in ("training_jobs", "job_triggers", "training_events"):
        op.add_column(table, sa.Column("reason", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    for table in ("training_jobs", "job_triggers", "training_events"):
        op.drop_column(table, "reason")
    op.drop_table("retrain_reasons")
    for table in ("live_turn", "live_versions", "live_figures", "waiting_outcomes", "predictions"):
        op.drop_table(table)
