"""The jobs', datasets', samples', versions', outbox's and dead letters' tables, and the base every
row class shares (naming convention, JSONB and time types)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar

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
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fcl.contract.enums import (
    ChampionReason,
    CheckKind,
    Direction,
    JobStatus,
    TrainingEventStatus,
    VerdictKind,
)
from fcl.contract.events import ValidationCheck
from fcl.storage.entities import ChampionMove, Dataset, Job, ModelVersion, TrainingEvent, WorkerHeartbeat

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        uuid.UUID: Uuid(as_uuid=True),
        str: Text,
    }


def created_column() -> Mapped[datetime]:
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
    # What every sample of the dataset shares (state length, feature names): the first seen.
    sample_shape: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    # The shape's version (an event that adds features, or an operator's reset, starts the next)
    # and the id after which the samples are of that shape: trainings read only those.
    shape_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    shape_from_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        CheckConstraint("threshold > 0", name="threshold_positive"),
        CheckConstraint("samples_since_training >= 0", name="since_training_nonnegative"),
    )

    def to_entity(self) -> Dataset:
        return Dataset(
            dataset_id=self.dataset_id,
            model_type=self.model_type,
            threshold=self.threshold,
            samples_since_training=self.samples_since_training,
            total_samples=self.total_samples,
            crossings=self.crossings,
            last_trained_at=self.last_trained_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            sample_shape=self.sample_shape,
            shape_version=self.shape_version,
            shape_from_id=self.shape_from_id,
        )


class SampleBatchRow(Base):
    """One accepted training-samples event: its id makes storing it idempotent."""

    __tablename__ = "sample_batches"
    __table_args__ = (Index(None, "received_at"),)  # the retention forgets the oldest (migration 0021)

    event_id: Mapped[str] = mapped_column(primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.dataset_id", ondelete="CASCADE"))
    sample_count: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = created_column()


def is_sample_partition(name: str | None) -> bool:
    """A day's partition of training_samples (or its default one), or a champion's copy in
    reference_samples: made by the database or the retention, not by these models (migrations
    0018 and 0023)."""
    return bool(name) and any(
        str(name).startswith(prefix) and str(name) != prefix for prefix in ("training_samples_", "reference_samples_")
    )


class TrainingSampleRow(Base):
    __tablename__ = "training_samples"

    # The identity is the dataset's watermark: a training run uses every sample with id <= N.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # No foreign keys: the one writer guarantees both references in its transaction (migration 0011).
    dataset_id: Mapped[str]
    batch_event_id: Mapped[str]
    payload: Mapped[dict[str, Any]]
    # The partition key (migration 0018: a partition per day, dropped whole by the retention).
    created_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=func.now())

    __table_args__ = (
        Index(None, "dataset_id", "id"),
        Index(None, "batch_event_id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )


class ReferenceSampleRow(Base):
    """A champion's copy of the samples it was judged on (`champion` = "type:version"), made by
    the sample retention before the days holding them go; one LIST partition per champion,
    dropped whole when its version is no longer champion (migration 0023)."""

    __tablename__ = "reference_samples"

    champion: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    payload: Mapped[dict[str, Any]]

    __table_args__ = ({"postgresql_partition_by": "LIST (champion)"},)


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
    run_after: Mapped[datetime] = created_column()
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
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # W3C traceparent of the span that admitted the job (fcl.contract.tracing), when traced
    trace_context: Mapped[str | None] = mapped_column(Text)
    # how many triggers the job has (job_triggers), kept by admission and merges (migration 0014)
    trigger_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reason: Mapped[dict[str, Any] | None]  # why it was queued: its first trigger's (migration 0022)

    __table_args__ = (
        CheckConstraint(_in("status", JobStatus), name="status_known"),
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority_range"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts_valid"),
        Index("ix_training_jobs_claim", "rank_at", "id", postgresql_where=text("status = 'queued'")),
        Index("uq_training_jobs_waiting", "dedupe_key", unique=True, postgresql_where=text("status = 'queued'")),
        Index("ix_training_jobs_lease", "lease_expires_at", postgresql_where=text("status = 'in_progress'")),
        # The claim's "does this dataset still train?" probe: running jobs only (migration 0010),
        # not every job the dataset ever had.
        Index(
            "ix_training_jobs_running_pair", "dataset_id", "model_type", postgresql_where=text("status = 'in_progress'")
        ),
        Index(None, "dataset_id", "model_type", "created_at"),
        Index(None, "status", "model_type"),
    )

    def to_entity(self, trigger_event_ids: tuple[str, ...] = ()) -> Job:
        return Job.from_mapping(
            {**{c.key: getattr(self, c.key) for c in self.__table__.columns}, "trigger_event_ids": trigger_event_ids}
        )


class InstallationRow(Base):
    """One row per database: what is drawn once for an installation (migration 0014)."""

    __tablename__ = "installation"

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    # the namespace of the threshold event ids fcl emits: unknowable outside, so unforgeable
    trigger_namespace: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))

    __table_args__ = (CheckConstraint("id", name="singleton"),)


class JobTriggerRow(Base):
    """Every event that asked for a job: its id, within the pair it asked for (`scope`, the job's
    `dedupe_key`), is the idempotency key of admission (migration 0014)."""

    __tablename__ = "job_triggers"

    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    priority: Mapped[int] = mapped_column(SmallInteger)
    source: Mapped[str] = mapped_column(server_default=text("'kafka'"))
    received_at: Mapped[datetime] = created_column()
    reason: Mapped[dict[str, Any] | None]  # why this trigger asked (migration 0022)

    __table_args__ = (
        Index("ix_job_triggers_job_order", "job_id", "received_at", "event_id"),
        Index("ix_job_triggers_event_id", "event_id"),
    )


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
    started_at: Mapped[datetime] = created_column()
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
    verdict: Mapped[str | None]  # contract.enums.VerdictKind, for a completed attempt
    verdict_message: Mapped[str | None]
    drift: Mapped[dict[str, Any] | None]  # contract.events.Drift of the validation, when measured
    reason: Mapped[dict[str, Any] | None]  # its job's (migration 0022)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt"),
        CheckConstraint(_in("status", TrainingEventStatus), name="status_known"),
        CheckConstraint(_in("verdict", VerdictKind), name="verdict_known"),
        Index(None, "started_at", "id"),
        Index(None, "model_type", "started_at", "id"),
        Index(None, "status", "started_at", "id"),  # the history's filters (migration 0010)
        Index(None, "model_type", "status", "started_at", "id"),
    )

    def to_entity(self) -> TrainingEvent:
        return TrainingEvent(
            id=self.id,
            job_id=self.job_id,
            attempt=self.attempt,
            dataset_id=self.dataset_id,
            model_type=self.model_type,
            status=TrainingEventStatus(self.status),
            worker=self.worker,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration_seconds=self.duration_seconds,
            fit_seconds=self.fit_seconds,
            sample_count=self.sample_count,
            dataset_watermark=self.dataset_watermark,
            metrics=dict(self.metrics),
            error_type=self.error_type,
            error_message=self.error_message,
            model_version=self.model_version,
            validation_passed=self.validation_passed,
            promoted=self.promoted,
            verdict=VerdictKind(self.verdict) if self.verdict else None,
            verdict_message=self.verdict_message,
            drift=self.drift,
            reason=self.reason,
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
    # the manifest's info (sizes, timings, what a search chose) and the profile of the data it was
    # trained from (trainers.drift), which the next candidate's drift is measured against
    info: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    profile: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_column()
    deleted_at: Mapped[datetime | None]  # removed by the retention: no longer promotable or downloadable
    artifact_deleted_at: Mapped[datetime | None]  # its artifact is gone from the store

    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("artifact_sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
        CheckConstraint("artifact_size >= 0", name="size_nonnegative"),
    )

    def to_entity(self) -> ModelVersion:
        return ModelVersion(
            model_type=self.model_type,
            version=self.version,
            training_event_id=self.training_event_id,
            job_id=self.job_id,
            dataset_id=self.dataset_id,
            parent_version=self.parent_version,
            artifact_path=self.artifact_path,
            artifact_sha256=self.artifact_sha256,
            artifact_size=self.artifact_size,
            artifact_format=self.artifact_format,
            metrics=dict(self.metrics),
            hyperparameters=dict(self.hyperparameters),
            dataset_watermark=self.dataset_watermark,
            dataset_hash=self.dataset_hash,
            seed=self.seed,
            library_versions=dict(self.library_versions),
            code_version=self.code_version,
            info=dict(self.info),
            profile=self.profile,
            created_at=self.created_at,
            deleted_at=self.deleted_at,
        )


class OperatorRequestRow(Base):
    """A champion move an operator asked for with an `Idempotency-Key` (migration 0015): the same
    key and request answer this ledger row again; the same key with another request is refused."""

    __tablename__ = "operator_requests"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    digest: Mapped[str] = mapped_column(Text)
    model_type: Mapped[str] = mapped_column(Text)
    ledger_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (Index("ix_operator_requests_created_at", "created_at"),)


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
    note: Mapped[str | None]  # why, in an operator's words (a manual promote)
    actor: Mapped[str | None]  # who or what made the move: a job on a worker, or an operator
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        UniqueConstraint("model_type", "seq"),
        ForeignKeyConstraint(["model_type", "version"], ["model_versions.model_type", "model_versions.version"]),
        CheckConstraint(_in("reason", ChampionReason), name="reason_known"),
        CheckConstraint("seq >= 1", name="seq_positive"),
    )

    def to_entity(self) -> ChampionMove:
        return ChampionMove(
            model_type=self.model_type,
            seq=self.seq,
            version=self.version,
            previous_version=self.previous_version,
            reason=ChampionReason(self.reason),
            note=self.note,
            actor=self.actor,
            event_id=self.event_id,
            created_at=self.created_at,
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
    created_at: Mapped[datetime] = created_column()

    __table_args__ = (
        UniqueConstraint("training_event_id", "position"),
        CheckConstraint(_in("direction", Direction), name="direction_known"),
        CheckConstraint(_in("kind", CheckKind), name="kind_known"),
    )

    def to_entity(self) -> ValidationCheck:
        return ValidationCheck(
            metric=self.metric,
            kind=CheckKind(self.kind),
            value=self.value,
            baseline=self.baseline,
            threshold=self.threshold,
            direction=Direction(self.direction),
            passed=self.passed,
        )


class OutboxRow(Base):
    """Events to publish, written in the same transaction as the state they announce."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    topic: Mapped[str]  # the contract's name without prefix, e.g. "training-status"
    key: Mapped[str | None]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_column()
    published_at: Mapped[datetime | None]
    # A row the broker refused `attempts` times; parked (kept, with its error, skipped by the relay)
    # once it reaches the relay's limit, so the rows after it go on.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None]
    parked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_outbox_pending", "id", postgresql_where=text("published_at IS NULL AND parked_at IS NULL")),
        Index("ix_outbox_published", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )


class DeadLetterRow(Base):
    """A refused input kept whole (up to FCL_MAX_EVENT_BYTES) for replay (migration 0016)."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    letter_id: Mapped[uuid.UUID] = mapped_column(unique=True)  # the dead-letter event's id
    source_topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(BYTEA)
    value: Mapped[bytes | None] = mapped_column(BYTEA)
    value_bytes: Mapped[int] = mapped_column(Integer)  # the value's size as it arrived
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    replayed_at: Mapped[datetime | None]
    replays: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (Index("ix_dead_letters_created_at", "created_at"),)


class WorkerHeartbeatRow(Base):
    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(primary_key=True)
    hostname: Mapped[str]
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = created_column()
    last_seen_at: Mapped[datetime] = created_column()
    current_job_id: Mapped[uuid.UUID | None]
    info: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))

    def to_entity(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            hostname=self.hostname,
            pid=self.pid,
            started_at=self.started_at,
            last_seen_at=self.last_seen_at,
            current_job_id=self.current_job_id,
            info=dict(self.info),
        )


class JobStatusCountRow(Base):
    """Jobs per status, kept by statement-level triggers on training_jobs (migration 0010), so
    `training-status` reads five rows instead of counting every job ever made. A statement that
    changes no job's status (a heartbeat, a joined trigger) does not touch it."""

    __tablename__ = "job_status_counts"

    status: Mapped[str] = mapped_column(primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # the writer's backend pid mod 16
    jobs: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class JobTypeCountRow(Base):
    """Jobs per model type and status, kept by triggers as `job_status_counts` is (migration 0019):
    what /metrics reads instead of counting every job."""

    __tablename__ = "job_type_counts"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class AttemptTotalRow(Base):
    """Training attempts that ended and their seconds, per model type and status, kept by a trigger
    on the insert of training_events (migration 0019): what /metrics reads."""

    __tablename__ = "attempt_totals"

    model_type: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    attempts: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    seconds: Mapped[float] = mapped_column(Double, server_default=text("0"))
