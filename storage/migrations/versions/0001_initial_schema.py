"""Initial schema: datasets and samples, the job queue, training events, model versions, the
append-only champion ledger, validation results, the outbox and worker heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION fcl_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("samples_since_training", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_samples", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("crossings", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_trained_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("samples_since_training >= 0", name=op.f("ck_datasets_since_training_nonnegative")),
        sa.CheckConstraint("threshold > 0", name=op.f("ck_datasets_threshold_positive")),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_datasets")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index(
        "ix_outbox_pending", "outbox", ["id"], unique=False, postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("5"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("rank_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.Uuid(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("progress", sa.Double(), nullable=True),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_training_jobs_status_known"),
        ),
        sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1", name=op.f("ck_training_jobs_attempts_valid")),
        sa.CheckConstraint("priority BETWEEN 0 AND 9", name=op.f("ck_training_jobs_priority_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_jobs")),
    )
    op.create_index(
        "ix_training_jobs_claim",
        "training_jobs",
        ["rank_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        op.f("ix_training_jobs_dataset_id_model_type_created_at"),
        "training_jobs",
        ["dataset_id", "model_type", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_training_jobs_lease",
        "training_jobs",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'in_progress'"),
    )
    op.create_index(op.f("ix_training_jobs_status_model_type"), "training_jobs", ["status", "model_type"], unique=False)
    op.create_index(
        "uq_training_jobs_waiting",
        "training_jobs",
        ["dedupe_key"],
        unique=True,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("current_job_id", sa.Uuid(), nullable=True),
        sa.Column(
            "info", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_heartbeats")),
    )
    op.create_table(
        "job_triggers",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.Text(), server_default=sa.text("'kafka'"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["training_jobs.id"], name=op.f("fk_job_triggers_job_id_training_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_job_triggers")),
    )
    op.create_index(op.f("ix_job_triggers_job_id"), "job_triggers", ["job_id"], unique=False)
    op.create_table(
        "sample_batches",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.dataset_id"],
            name=op.f("fk_sample_batches_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_sample_batches")),
    )
    op.create_table(
        "training_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Double(), nullable=True),
        sa.Column("fit_seconds", sa.Double(), nullable=True),
        sa.Column("sample_count", sa.BigInteger(), nullable=True),
        sa.Column("dataset_watermark", sa.BigInteger(), nullable=True),
        sa.Column(
            "metrics", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("validation_passed", sa.Boolean(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'cancelled', 'abandoned')",
            name=op.f("ck_training_events_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["training_jobs.id"], name=op.f("fk_training_events_job_id_training_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_events")),
        sa.UniqueConstraint("job_id", "attempt", name=op.f("uq_training_events_job_id_attempt")),
    )
    op.create_index(
        op.f("ix_training_events_model_type_started_at_id"),
        "training_events",
        ["model_type", "started_at", "id"],
        unique=False,
    )
    op.create_index(op.f("ix_training_events_started_at_id"), "training_events", ["started_at", "id"], unique=False)
    op.create_table(
        "model_versions",
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("training_event_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.Text(), nullable=False),
        sa.Column("artifact_size", sa.BigInteger(), nullable=False),
        sa.Column("artifact_format", sa.Text(), nullable=False),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("hyperparameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dataset_watermark", sa.BigInteger(), nullable=False),
        sa.Column("dataset_hash", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("library_versions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("code_version", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("artifact_sha256 ~ '^[0-9a-f]{64}$'", name=op.f("ck_model_versions_sha256_hex")),
        sa.CheckConstraint("artifact_size >= 0", name=op.f("ck_model_versions_size_nonnegative")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_model_versions_version_positive")),
        sa.ForeignKeyConstraint(
            ["training_event_id"],
            ["training_events.id"],
            name=op.f("fk_model_versions_training_event_id_training_events"),
        ),
        sa.PrimaryKeyConstraint("model_type", "version", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("training_event_id", name=op.f("uq_model_versions_training_event_id")),
    )
    op.create_table(
        "training_samples",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dataset_id", sa.Text(), nullable=False),
        sa.Column("batch_event_id", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_event_id"],
            ["sample_batches.event_id"],
            name=op.f("fk_training_samples_batch_event_id_sample_batches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.dataset_id"],
            name=op.f("fk_training_samples_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_samples")),
    )
    op.create_index(op.f("ix_training_samples_batch_event_id"), "training_samples", ["batch_event_id"], unique=False)
    op.create_index(op.f("ix_training_samples_dataset_id_id"), "training_samples", ["dataset_id", "id"], unique=False)
    op.create_table(
        "validation_results",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("training_event_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("candidate_version", sa.Integer(), nullable=True),
        sa.Column("baseline_version", sa.Integer(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("baseline", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "direction IN ('higher_is_better', 'lower_is_better')", name=op.f("ck_validation_results_direction_known")
        ),
        sa.CheckConstraint("kind IN ('value', 'change')", name=op.f("ck_validation_results_kind_known")),
        sa.ForeignKeyConstraint(
            ["training_event_id"],
            ["training_events.id"],
            name=op.f("fk_validation_results_training_event_id_training_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_results")),
        sa.UniqueConstraint(
            "training_event_id", "position", name=op.f("uq_validation_results_training_event_id_position")
        ),
    )
    op.create_table(
        "champion_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("model_type", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "reason IN ('validated', 'manual', 'rollback')", name=op.f("ck_champion_ledger_reason_known")
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_champion_ledger_seq_positive")),
        sa.ForeignKeyConstraint(
            ["model_type", "version"],
            ["model_versions.model_type", "model_versions.version"],
            name=op.f("fk_champion_ledger_model_type_version_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_champion_ledger")),
        sa.UniqueConstraint("event_id", name=op.f("uq_champion_ledger_event_id")),
        sa.UniqueConstraint("model_type", "seq", name=op.f("uq_champion_ledger_model_type_seq")),
    )
    # The ledger is history: it is appended to, never rewritten.
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER champion_ledger_append_only BEFORE UPDATE OR DELETE ON champion_ledger "
        "FOR EACH ROW EXECUTE FUNCTION fcl_refuse_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS champion_ledger_append_only ON champion_ledger")
    op.drop_table("champion_ledger")
    op.drop_table("validation_results")
    op.drop_index(op.f("ix_training_samples_dataset_id_id"), table_name="training_samples")
    op.drop_index(op.f("ix_training_samples_batch_event_id"), table_name="training_samples")
    op.drop_table("training_samples")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_training_events_started_at_id"), table_name="training_events")
    op.drop_index(op.f("ix_training_events_model_type_started_at_id"), table_name="training_events")
    op.drop_table("training_events")
    op.drop_table("sample_batches")
    op.drop_index(op.f("ix_job_triggers_job_id"), table_name="job_triggers")
    op.drop_table("job_triggers")
    op.drop_table("worker_heartbeats")
    op.drop_index("uq_training_jobs_waiting", table_name="training_jobs", postgresql_where=sa.text("status = 'queued'"))
    op.drop_index(op.f("ix_training_jobs_status_model_type"), table_name="training_jobs")
    op.drop_index(
        "ix_training_jobs_lease", table_name="training_jobs", postgresql_where=sa.text("status = 'in_progress'")
    )
    op.drop_index(op.f("ix_training_jobs_dataset_id_model_type_created_at"), table_name="training_jobs")
    op.drop_index("ix_training_jobs_claim", table_name="training_jobs", postgresql_where=sa.text("status = 'queued'"))
    op.drop_table("training_jobs")
    op.drop_index("ix_outbox_pending", table_name="outbox", postgresql_where=sa.text("published_at IS NULL"))
    op.drop_table("outbox")
    op.drop_table("datasets")
    op.execute("DROP FUNCTION IF EXISTS fcl_refuse_change()")
