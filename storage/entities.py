"""Plain domain objects returned by storage (never ORM rows): frozen, keyword-only dataclasses.
The enums they use are the contract's (`contract.enums`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from fcl.contract import model_types
from fcl.contract.enums import AdmissionOutcome, ChampionReason, JobStatus, TrainingEventStatus, VerdictKind
from fcl.contract.events import Drift, ValidationCheck
from fcl.contract.settings import Settings


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
    sample_shape: dict[str, Any] | None = None
    shape_version: int = 1
    shape_from_id: int = 0  # trainings read the samples after this id (those of the newest shape)

    @property
    def ready(self) -> bool:
        return self.samples_since_training >= self.threshold


@dataclass(frozen=True, kw_only=True)
class JobTrigger:
    """One event that asked for a job (a row of job_triggers)."""

    event_id: str
    priority: int
    source: str
    received_at: datetime


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
    # the first and last TRIGGER_IDS_SHOWN of the job's trigger ids, in arrival order; all of them
    # are counted in trigger_count and paged by `JobRepository.triggers`
    trigger_event_ids: tuple[str, ...] = ()
    trigger_count: int = 0
    trace_context: str | None = None  # the admitting span's W3C traceparent (fcl.contract.tracing)
    reason: dict[str, Any] | None = None  # why it was queued (contract.events.TrainingStatusEvent.reason)

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> Job:
        """A job from a row of `training_jobs` (any mapping with its columns; extra keys are
        ignored), with `trigger_event_ids` when the row carries them."""
        values = {f.name: row[f.name] for f in fields(cls) if f.name in row}
        values["status"] = JobStatus(values["status"])
        values["trigger_event_ids"] = tuple(values.get("trigger_event_ids") or ())
        return cls(**values)

    @property
    def lease(self) -> Lease:
        """The lease a worker holds on this claimed job."""
        if self.lease_token is None or self.lease_owner is None:
            raise ValueError(f"job {self.id} is not leased")
        return Lease(job_id=self.id, token=self.lease_token, owner=self.lease_owner)


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A worker's hold on a running job: every write of its outcome is checked against `token`."""

    job_id: uuid.UUID
    token: uuid.UUID
    owner: str


@dataclass(frozen=True, kw_only=True)
class Transition:
    """What one lifecycle transition of a job did (storage.queue), as committed."""

    job: Job  # the job after the transition
    before: JobStatus | None  # its status before (None: it did not exist)
    merged_into: Job | None = None  # a job going back to the queue joined the one already waiting
    training_event_id: uuid.UUID | None = None  # the attempt row the transition wrote
    model_version: int | None = None  # complete: the version recorded
    promoted: bool | None = None  # complete: whether it became the champion
    events: int = 0  # outbox rows written


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
    verdict: VerdictKind | None = None
    verdict_message: str | None = None
    drift: dict[str, Any] | None = None  # contract.events.Drift, when the validation measured it
    reason: dict[str, Any] | None = None  # its job's


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
    info: dict[str, Any] = field(default_factory=dict)  # the manifest's info: sizes, timings, a search's choice
    profile: dict[str, Any] | None = None  # its training data's profile (trainers.drift)


@dataclass(frozen=True, kw_only=True)
class ModelVersion(NewModelVersion):
    version: int
    created_at: datetime
    deleted_at: datetime | None = None  # removed by the retention (the row stays for lineage and history)


@dataclass(frozen=True, kw_only=True)
class ChampionMove:
    model_type: str
    seq: int
    version: int
    previous_version: int | None
    reason: ChampionReason
    event_id: uuid.UUID
    created_at: datetime
    note: str | None = None
    actor: str | None = None  # who or what made the move: "job <id> on <worker>", or the operator


@dataclass(frozen=True, slots=True)
class EncodedOutboxMessage:
    """An outbox row as the relay sends it: the payload is the stored JSON text, not decoded."""

    id: int
    topic: str
    key: str | None
    payload_json: str
    trace_context: str | None = None  # its job's W3C traceparent: sent as the record's header


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
    trace_context: str | None = None  # W3C traceparent of the span admitting it, kept with a new job
    reason: dict[str, Any] | None = None  # why it asks; the first of a new job's becomes the job's


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
    samples: Sequence[dict[str, Any] | str]  # each a sample, or its JSON text (encoded once, by the parser)
    occurred_at: datetime | None = None
    shape: dict[str, Any] = field(default_factory=dict)  # what every sample of its dataset shares


@dataclass(frozen=True, kw_only=True)
class ModelFigure:
    """For /metrics, per model type: the champion and how old its model is, and the largest PSI
    the latest candidate judged against a champion's data measured."""

    model_type: str
    champion_version: int | None
    champion_age_seconds: float | None  # since the champion version was recorded
    drift_psi_max: float | None


@dataclass(frozen=True, kw_only=True)
class OutboxFigure:
    pending: int  # committed, not yet published
    parked: int  # given up on after the broker refused them


@dataclass(frozen=True, kw_only=True)
class KeptInput:
    """A refused input as it arrived (its value up to FCL_MAX_EVENT_BYTES), kept for replay."""

    letter_id: uuid.UUID  # the id of its dead-letter event
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    value_bytes: int  # the value's size as it arrived
    reason: str


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A refused input: its dead-letter event (bounded, for the topic) and the input kept whole."""

    event: tuple[str, str | None, dict[str, Any]]  # an outbox entry: (topic, key, payload)
    kept: KeptInput


@dataclass(frozen=True, kw_only=True)
class StoredDeadLetter(KeptInput):
    """A kept input as an operator sees it."""

    id: int
    created_at: datetime
    replayed_at: datetime | None
    replays: int


@dataclass(frozen=True, kw_only=True)
class ParkedOutboxRow:
    """An outbox row the relay gave up on: kept, with its error, for an operator."""

    id: int
    event_id: uuid.UUID
    topic: str
    key: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    parked_at: datetime
    payload_bytes: int


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
    refused: dict[str, str]  # event id -> why (another model type or sample shape than its dataset's)
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


@dataclass(frozen=True, kw_only=True)
class StoredArtifactRef:
    """Where a model version's artifact is and what its bytes must be."""

    path: str
    sha256: str
    size: int
    format: str


@dataclass(frozen=True, kw_only=True)
class Champion:
    """The serving version of a model type: the ledger's last move and the version it names."""

    move: ChampionMove
    version: ModelVersion

    @property
    def artifact(self) -> StoredArtifactRef:
        v = self.version
        return StoredArtifactRef(
            path=v.artifact_path, sha256=v.artifact_sha256, size=v.artifact_size, format=v.artifact_format
        )


@dataclass(frozen=True, kw_only=True)
class TrainingInputs:
    """What a worker needs before it trains a claimed job: the samples up to `watermark`, and the
    champion to judge the candidate against (None for the first model of its type)."""

    watermark: int
    champion: Champion | None
    shape_from_id: int = 0  # the samples after this id are of the dataset's newest shape
    shape_version: int = 1


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A trained and judged candidate whose artifact is written. The training child makes it and
    it reaches `storage.queue.completion.completion_document` unchanged: a new field of a version
    is added here, set by the child, written by `fcl_complete_job` (a migration replaces it, with
    the column) and shown by the view."""

    metrics: dict[str, float]  # finite values only
    baseline_metrics: dict[str, float] | None
    checks: tuple[ValidationCheck, ...]
    passed: bool
    hyperparameters: dict[str, Any]
    artifact: StoredArtifactRef
    fit_seconds: float
    sample_count: int
    dataset_hash: str
    seed: int
    library_versions: dict[str, str]
    code_version: str
    verdict: VerdictKind = VerdictKind.PASSED  # only PASSED promotes; see contract.enums.VerdictKind
    verdict_message: str | None = None  # why, when the verdict is not PASSED
    info: dict[str, Any] = field(default_factory=dict)  # the manifest's info, JSON-ready
    profile: dict[str, Any] | None = None  # the profile of the samples it was trained from
    drift: Drift | None = None  # its samples against the champion's

    @property
    def promoted(self) -> bool:
        return self.verdict is VerdictKind.PASSED and self.passed


@dataclass(frozen=True, kw_only=True)
class CompletedAttempt:
    """An attempt that produced a candidate, as a worker hands it to `complete`."""

    started_at: datetime
    duration_seconds: float
    dataset_watermark: int  # the samples it trained on: the dataset's counter up to here
    validated_against: int  # the champion ledger's seq the candidate was judged against (0: none)
    candidate: Candidate


@dataclass(frozen=True, kw_only=True)
class EndedAttempt:
    """An attempt that ended without a result: failed, stopped or abandoned."""

    started_at: datetime
    duration_seconds: float
    error_type: str
    message: str


@dataclass(frozen=True, kw_only=True)
class AdmissionPolicy:
    """How admission makes jobs: the ageing step (one priority level is worth this much waiting)
    and the attempts a new job gets per model type."""

    ageing_step: timedelta = timedelta(minutes=10)
    max_attempts: Mapping[str, int] = field(default_factory=dict)
    default_max_attempts: int = 3

    def attempts_for(self, model_type: str) -> int:
        return int(self.max_attempts.get(model_type, self.default_max_attempts))

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionPolicy:
        return cls(
            ageing_step=timedelta(seconds=settings.queue_ageing_seconds),
            max_attempts={m: settings.attempts_for(m) for m in model_types.names()},
        )
