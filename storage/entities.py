"""Plain domain objects returned by the repositories (never ORM rows)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class TrainingEventStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # the worker lost its lease or was stopped; the job runs again


class Direction(enum.StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class ChampionReason(enum.StrEnum):
    VALIDATED = "validated"
    MANUAL = "manual"
    ROLLBACK = "rollback"


@dataclass(frozen=True, kw_only=True)
class Dataset:
    dataset_id: str
    model_type: str
    threshold: int
    samples_since_training: int
    total_samples: int
    crossings: int
    last_trained_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def ready(self) -> bool:
        return self.samples_since_training >= self.threshold


@dataclass(frozen=True, kw_only=True)
class SampleBatchResult:
    """What storing one samples event did to its dataset."""

    stored: int
    duplicate: bool
    dataset: Dataset


@dataclass(frozen=True, kw_only=True)
class Job:
    id: uuid.UUID
    dataset_id: str
    model_type: str
    status: JobStatus
    priority: int
    attempts: int
    max_attempts: int
    rank_at: datetime
    run_after: datetime
    lease_owner: str | None
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: float | None
    error_type: str | None
    error_message: str | None
    model_version: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    trigger_event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TrainingEvent:
    id: uuid.UUID
    job_id: uuid.UUID
    attempt: int
    dataset_id: str
    model_type: str
    status: TrainingEventStatus
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    fit_seconds: float | None
    sample_count: int | None
    dataset_watermark: int | None
    metrics: dict[str, Any]
    error_type: str | None
    error_message: str | None
    model_version: int | None
    validation_passed: bool | None
    promoted: bool | None


@dataclass(frozen=True, kw_only=True)
class NewModelVersion:
    model_type: str
    training_event_id: uuid.UUID
    job_id: uuid.UUID
    dataset_id: str
    parent_version: int | None
    artifact_path: str
    artifact_sha256: str
    artifact_size: int
    artifact_format: str
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    dataset_watermark: int
    dataset_hash: str
    seed: int
    library_versions: dict[str, str]
    code_version: str


@dataclass(frozen=True, kw_only=True)
class ModelVersion(NewModelVersion):
    version: int
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class ChampionMove:
    model_type: str
    seq: int
    version: int
    previous_version: int | None
    reason: ChampionReason
    event_id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class ValidationCheck:
    metric: str
    value: float | None
    baseline: float | None
    threshold: float
    direction: Direction
    passed: bool
    kind: str = "value"  # "value": against a fixed bound; "change": against the baseline


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    id: int
    event_id: uuid.UUID
    topic: str
    key: str | None
    payload: dict[str, Any]
    created_at: datetime
    published_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EncodedOutboxMessage:
    """An outbox row as the relay sends it: the payload is the stored JSON text, not decoded."""

    id: int
    topic: str
    key: str | None
    payload_json: str


@dataclass(frozen=True, kw_only=True)
class WorkerHeartbeat:
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    current_job_id: uuid.UUID | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TriggerRequest:
    """One request for a training job (a dataset-threshold event, an HTTP trigger, ...)."""

    event_id: str
    dataset_id: str
    model_type: str
    priority: int
    source: str = "kafka"
    max_attempts: int = 3  # for a job this request creates


class AdmissionOutcome(enum.StrEnum):
    CREATED = "created"  # a new waiting job
    JOINED = "joined"  # joined the job already waiting for the same dataset and model type
    DUPLICATE = "duplicate"  # this event id was admitted before


@dataclass(frozen=True, kw_only=True)
class Admission:
    request: TriggerRequest
    job_id: uuid.UUID
    outcome: AdmissionOutcome
    priority: int  # the job's priority after admission
    attempts: int


@dataclass(frozen=True, kw_only=True)
class NewSampleBatch:
    """One training-samples event, validated."""

    event_id: str
    dataset_id: str
    model_type: str
    samples: list[dict[str, Any]]
    occurred_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ThresholdCrossing:
    """A dataset's counter reached its threshold (its `crossing`-th time)."""

    dataset_id: str
    model_type: str
    crossing: int
    samples_since_training: int
    threshold: int


@dataclass(frozen=True, kw_only=True)
class SampleIngest:
    stored_batches: int
    stored_samples: int
    duplicates: list[str]  # event ids seen before
    mismatched: dict[str, str]  # event id -> the model type its dataset already has
    crossings: list[ThresholdCrossing]


@dataclass(frozen=True, kw_only=True)
class QueueFigure:
    model_type: str
    status: str
    jobs: int
    oldest_age_seconds: float | None  # the longest a job in this state has been in it


@dataclass(frozen=True, kw_only=True)
class TrainingFigure:
    model_type: str
    outcome: str  # a training event's status: completed, failed, cancelled, abandoned
    attempts: int
    seconds_total: float
