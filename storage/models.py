"""The schema as SQLAlchemy 2.0 declarative models. Alembic's migrations create exactly this
(a test compares the migrated database with this metadata)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
EVENT_STATUSES = ("running", "completed", "failed", "cancelled", "abandoned")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        uuid.UUID: Uuid(as_uuid=True),
        str: Text,
    }


def _created() -> Mapped[datetime]:
    return mapped_column(server_default=func.now())


class DatasetRow(Base):
    __tablename__ = "datasets"

    dataset_id: Mapped[str] = mapped_column(primary_key=True)
    model_type: Mapped[str]
    threshold: Mapped[int] = mapped_column(Integer)
    samples_since_training: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_samples: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # How many times the counter crossed its threshold: the crossing's number makes the
    # dataset-threshold event id, so a replay emits the same id again.
    crossings: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The newest sample id the last completed training used.
    trained_watermark: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_trained_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("threshold > 0", name="threshold_positive"),
        CheckConstraint("samples_since_training >= 0", name="since_training_nonnegative"),
    )


class SampleBatchRow(Base):
    """One accepted training-samples event: its id makes storing it idempotent."""

    __tablename__ = "sample_batches"

    event_id: Mapped[str] = mapped_column(primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.dataset_id", ondelete="CASCADE"))
    sample_count: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = _created()


class TrainingSampleRow(Base):
    __tablename__ = "training_samples"

    # The identity is the dataset's watermark: a training run uses every sample with id <= N.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.dataset_id", ondelete="CASCADE"))
    batch_event_id: Mapped[str] = mapped_column(ForeignKey("sample_batches.event_id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()

    __table_args__ = (Index(None, "dataset_id", "id"), Index(None, "batch_event_id"))


class TrainingJobRow(Base):
    __tablename__ = "training_jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    dataset_id: Mapped[str]
    model_type: Mapped[str]
    status: Mapped[str] = mapped_column(server_default=text("'queued'"))
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("5"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    # Claim order with ageing: the enqueue time moved earlier by a step per priority level,
    # so higher priorities go first yet a waiting job's turn always comes (and it is indexable).
    rank_at: Mapped[datetime]
    run_after: Mapped[datetime] = _created()
    # "dataset_id/model_type": at most one waiting job per pair (partial unique index below).
    dedupe_key: Mapped[str]
    lease_owner: Mapped[str | None]
    lease_token: Mapped[uuid.UUID | None]
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    progress: Mapped[float | None] = mapped_column(Double)
    error_type: Mapped[str | None]
    error_message: Mapped[str | None]
    model_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status_known"),
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority_range"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts_valid"),
        Index("ix_training_jobs_claim", "rank_at", "id", postgresql_where=text("status = 'queued'")),
        Index("uq_training_jobs_waiting", "dedupe_key", unique=True, postgresql_where=text("status = 'queued'")),
        Index("ix_training_jobs_lease", "lease_expires_at", postgresql_where=text("status = 'in_progress'")),
        Index(None, "dataset_id", "model_type", "created_at"),
        Index(None, "status", "model_type"),
    )


class JobTriggerRow(Base):
    """Every event that asked for a job: its id is the idempotency key of admission."""

    __tablename__ = "job_triggers"

    event_id: Mapped[str] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    priority: Mapped[int] = mapped_column(SmallInteger)
    source: Mapped[str] = mapped_column(server_default=text("'kafka'"))
    received_at: Mapped[datetime] = _created()

    __table_args__ = (Index(None, "job_id"),)


class TrainingEventRow(Base):
    """One attempt at running a job, with its timings and metrics."""

    __tablename__ = "training_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[str]
    model_type: Mapped[str]
    status: Mapped[str] = mapped_column(server_default=text("'running'"))
    worker: Mapped[str | None]
    started_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Double)
    fit_seconds: Mapped[float | None] = mapped_column(Double)
    sample_count: Mapped[int | None] = mapped_column(BigInteger)
    dataset_watermark: Mapped[int | None] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    error_type: Mapped[str | None]
    error_message: Mapped[str | None]
    model_version: Mapped[int | None] = mapped_column(Integer)
    validation_passed: Mapped[bool | None] = mapped_column(Boolean)
    promoted: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt"),
        CheckConstraint(_in("status", EVENT_STATUSES), name="status_known"),
        Index(None, "started_at", "id"),
        Index(None, "model_type", "started_at", "id"),
    )


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    model_type: Mapped[str] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_events.id"), unique=True)
    job_id: Mapped[uuid.UUID]
    dataset_id: Mapped[str]
    parent_version: Mapped[int | None] = mapped_column(Integer)
    artifact_path: Mapped[str]
    artifact_sha256: Mapped[str]
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    artifact_format: Mapped[str]
    metrics: Mapped[dict[str, Any]]
    hyperparameters: Mapped[dict[str, Any]]
    dataset_watermark: Mapped[int] = mapped_column(BigInteger)
    dataset_hash: Mapped[str]
    seed: Mapped[int] = mapped_column(BigInteger)
    library_versions: Mapped[dict[str, Any]]
    code_version: Mapped[str]
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("artifact_sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
        CheckConstraint("artifact_size >= 0", name="size_nonnegative"),
    )


class ChampionLedgerRow(Base):
    """Append-only: each row makes `version` the champion of `model_type`. A trigger in the
    migration refuses UPDATE and DELETE. `seq` numbers the moves per model type; the unique
    (model_type, seq) turns "move only if the champion is still X" into an insert that fails."""

    __tablename__ = "champion_ledger"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_type: Mapped[str]
    seq: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str]
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        UniqueConstraint("model_type", "seq"),
        ForeignKeyConstraint(["model_type", "version"], ["model_versions.model_type", "model_versions.version"]),
        CheckConstraint("reason IN ('validated', 'manual', 'rollback')", name="reason_known"),
        CheckConstraint("seq >= 1", name="seq_positive"),
    )


class ValidationResultRow(Base):
    """One check of one candidate: metric, value, baseline, threshold, direction, verdict."""

    __tablename__ = "validation_results"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    training_event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_events.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(SmallInteger)
    model_type: Mapped[str]
    candidate_version: Mapped[int | None] = mapped_column(Integer)
    baseline_version: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str]
    metric: Mapped[str]
    value: Mapped[float | None] = mapped_column(Double)
    baseline: Mapped[float | None] = mapped_column(Double)
    threshold: Mapped[float] = mapped_column(Double)
    direction: Mapped[str]
    passed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        UniqueConstraint("training_event_id", "position"),
        CheckConstraint("direction IN ('higher_is_better', 'lower_is_better')", name="direction_known"),
        CheckConstraint("kind IN ('value', 'change')", name="kind_known"),
    )


class OutboxRow(Base):
    """Events to publish, written in the same transaction as the state they announce."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    topic: Mapped[str]  # the contract's name without prefix, e.g. "training-status"
    key: Mapped[str | None]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()
    published_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_pending", "id", postgresql_where=text("published_at IS NULL")),)


class WorkerHeartbeatRow(Base):
    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(primary_key=True)
    hostname: Mapped[str]
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = _created()
    last_seen_at: Mapped[datetime] = _created()
    current_job_id: Mapped[uuid.UUID | None]
    info: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
