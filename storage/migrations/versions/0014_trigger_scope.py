"""Trigger ids are scoped by dataset and model type, and a job counts its triggers.

- `job_triggers.scope` is the pair a trigger asked a job for (`dataset_id/model_type`, the job's
  `dedupe_key`). The primary key becomes (scope, event_id): an id is a duplicate only for the same
  pair, so one producer's id can never pre-empt another dataset's trigger. Old rows take their
  job's pair; an index on event_id alone keeps the HTTP Idempotency-Key lookup (which must see a
  key used for any pair) an index scan.
- `training_jobs.trigger_count` is maintained by admission and merges, so a job's reads return
  the count plus its first and last triggers instead of every id (the full list is paged);
  `ix_job_triggers_job_order` serves both ends.
- `installation.trigger_namespace`, a random UUID drawn once per database: the namespace of the
  ids fcl gives the threshold events it emits, so that no producer can compute a future crossing's
  id and send it first.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("id", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("trigger_namespace", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.CheckConstraint("id", name=op.f("ck_installation_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    op.execute("INSERT INTO installation DEFAULT VALUES")
    op.add_column("job_triggers", sa.Column("scope", sa.Text(), nullable=True))
    op.execute("""
        UPDATE job_triggers t SET scope = j.dataset_id || '/' || j.model_type
        FROM training_jobs j WHERE j.id = t.job_id
    """)
    op.alter_column("job_triggers", "scope", nullable=False)
    op.drop_constraint("pk_job_triggers", "job_triggers", type_="primary")
    op.create_primary_key("pk_job_triggers", "job_triggers", ["scope", "event_id"])
    op.create_index("ix_job_triggers_event_id", "job_triggers", ["event_id"])
    op.drop_index("ix_job_triggers_job_id", table_name="job_triggers")
    op.create_index("ix_job_triggers_job_order", "job_triggers", ["job_id", "received_at", "event_id"])
    op.add_column(
        "training_jobs", sa.Column("trigger_count", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.execute("""
        UPDATE training_jobs j SET trigger_count = c.n
        FROM (SELECT job_id, count(*) AS n FROM job_triggers GROUP BY job_id) c WHERE c.job_id = j.id
    """)


def downgrade() -> None:
    op.drop_table("installation")
    op.drop_column("training_jobs", "trigger_count")
    op.drop_index("ix_job_triggers_job_order", table_name="job_triggers")
    op.create_index("ix_job_triggers_job_id", "job_triggers", ["job_id"])
    op.drop_index("ix_job_triggers_event_id", table_name="job_triggers")
    op.drop_constraint("pk_job_triggers", "job_triggers", type_="primary")
    # ids that are now used by two pairs cannot share the old key: the later rows go
    op.execute("""
        DELETE FROM job_triggers t USING job_triggers o
        WHERE o.event_id = t.event_id AND (o.received_at, o.scope) < (t.received_at, t.scope)
    """)
    op.create_primary_key("pk_job_triggers", "job_triggers", ["event_id"])
    op.drop_column("job_triggers", "scope")
