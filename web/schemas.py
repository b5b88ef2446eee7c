"""What the HTTP API takes and returns: pydantic models that the handlers validate and serialise
with AND that `/openapi.json` is generated from, so the documentation cannot drift from the code.

`from_*` constructors turn storage's domain objects into views; nothing here touches SQL."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from fcl.contract.enums import AdmissionOutcome, ChampionReason, JobStatus, TrainingEventStatus, VerdictKind
from fcl.contract.events import Drift, ErrorInfo, PredictionEvent, Timestamp, ValidationCheck
from fcl.contract.model_types import ModelTypeName
from fcl.storage.entities import (
    ChampionMove,
    Dataset,
    Job,
    ModelVersion,
    StoredDeadLetter,
    TrainingEvent,
    WorkerHeartbeat,
)


class View(BaseModel):
    model_config = ConfigDict(frozen=True, use_enum_values=True)


# -- errors -----------------------------------------------------------------------------------------
class ErrorDetail(View):
    code: str = Field(description="machine-readable, e.g. not_found, invalid_body, unauthorized")
    message: str
    request_id: str
    details: list[dict[str, Any]] | None = Field(default=None, description="field errors of a 422")


class ErrorBody(View):
    error: ErrorDetail


# -- requests ---------------------------------------------------------------------------------------
class TriggerBody(BaseModel):
    """Unknown extra fields are ignored, as in events."""

    model_config = ConfigDict(extra="ignore")
    # strict: a JSON true or 5.0 is not a priority (the schema says integer; lax mode read true as 1)
    priority: int = Field(default=5, ge=0, le=9, strict=True, description="0-9, higher runs first")
    dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="default: fincoach-<model_type>",
    )


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=10, ge=1, le=100)
    model_type: ModelTypeName | None = None
    status: TrainingEventStatus | None = None
    before: str | None = Field(
        default=None, max_length=200, description="the `next_before` of the previous page (opaque cursor)"
    )


class ModelVersionsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_type: ModelTypeName | None = None
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="only this version (with model_type)")
    limit: int = Field(default=50, ge=1, le=500, description="versions, and ledger moves, per page")
    before: str | None = Field(
        default=None, max_length=600, description="the `next_before` of the previous page (older versions)"
    )
    ledger_before: str | None = Field(
        default=None, max_length=600, description="the `ledger_next_before` of the previous page (older moves)"
    )


def encode_cursor(started_at: datetime, event_id: uuid.UUID) -> str:
    """The cursor of the page after the training event (started_at, event_id)."""
    raw = f"{started_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Raises ValueError for anything that is not a cursor this API made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        started = datetime.fromisoformat(at)
        if started.tzinfo is None:
            raise ValueError("no zone")
        return started, uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("`before` is not a cursor from a previous page") from exc


def _encodable(value: str) -> str:
    """Text PostgreSQL can store: UTF-8 (no lone surrogate) without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text") from None
    if "\x00" in value:
        raise ValueError("NUL is not allowed in text")
    return value


def _text_only(value: Any) -> Any:
    """A time in a body is RFC 3339 text, as the document says: not a number read as epoch seconds."""
    if not isinstance(value, str):
        raise ValueError("a time is RFC 3339 text")
    return value


# Text a filter compares with stored text; a row id (a bigint); a time given in a body.
FilterText = Annotated[str, Field(max_length=500), AfterValidator(_encodable)]
RowId = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
BodyTime = Annotated[Timestamp, BeforeValidator(_text_only)]


class PageQuery(BaseModel):
    """A page of a list that grows without bound (cursor paging, oldest first)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=50, ge=1, le=500)
    after: str | None = Field(
        default=None, max_length=600, description="the `next_after` of the previous page (opaque cursor)"
    )


def encode_key(*parts: str) -> str:
    """An opaque cursor of a row's sort key (strings; a timestamp in isoformat)."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_key(cursor: str, arity: int) -> list[str]:
    """The parts of a cursor `encode_key` made; ValueError for anything else."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("`after` is not a cursor from a previous page") from exc
    if not (isinstance(parts, list) and len(parts) == arity and all(isinstance(p, str) for p in parts)):
        raise ValueError("`after` is not a cursor from a previous page")
    return parts


def decode_time(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError("`after` is not a cursor from a previous page")
    return at


# -- views ------------------------------------------------------------------------------------------
class JobView(View):
    job_id: uuid.UUID
    dataset_id: str
    model_type: str
    status: JobStatus
    priority: int
    attempts: int
    max_attempts: int
    progress: float | None
    cancel_requested: bool
    worker: str | None = Field(description="the worker holding the job while it runs")
    error: ErrorInfo | None
    model_version: int | None = Field(description="the version this job recorded")
    trigger_event_ids: list[str] = Field(
        description="the first and last 20 ids of the events that asked for this job, in arrival order; "
        "`GET /training-job/{job_id}/triggers` pages them all"
    )
    trigger_count: int = Field(description="how many events asked for this job")
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reason: dict[str, Any] | None = Field(
        default=None,
        description="why the job was queued: `kind` (threshold, operator, live_drop, input_drift, champion_age) "
        "and the figures that made it",
    )

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            job_id=job.id,
            dataset_id=job.dataset_id,
            model_type=job.model_type,
            status=job.status,
            priority=job.priority,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            progress=job.progress,
            cancel_requested=job.cancel_requested,
            worker=job.lease_owner if job.status is JobStatus.IN_PROGRESS else None,
            error=ErrorInfo(type=job.error_type, message=job.error_message or "") if job.error_type else None,
            model_version=job.model_version,
            trigger_event_ids=list(job.trigger_event_ids),
            trigger_count=job.trigger_count,
            created_at=job.created_at,
            updated_at=job.updated_at,
            run_after=job.run_after,
            started_at=job.started_at,
            finished_at=job.finished_at,
            reason=job.reason,
        )


class TrainingEventView(View):
    training_event_id: uuid.UUID
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
    error: ErrorInfo | None
    model_version: int | None
    validation_passed: bool | None
    promoted: bool | None = Field(description="whether this training's version was promoted when it was validated")
    verdict: VerdictKind | None = None
    verdict_message: str | None = None
    reason: dict[str, Any] | None = Field(
        default=None,
        description="why the job was queued: `kind` (threshold, operator, live_drop, input_drift, champion_age) "
        "and the figures that made it",
    )

    @classmethod
    def of(cls, e: TrainingEvent) -> TrainingEventView:
        return cls(
            training_event_id=e.id,
            job_id=e.job_id,
            attempt=e.attempt,
            dataset_id=e.dataset_id,
            model_type=e.model_type,
            status=e.status,
            worker=e.worker,
            started_at=e.started_at,
            finished_at=e.finished_at,
            duration_seconds=e.duration_seconds,
            fit_seconds=e.fit_seconds,
            sample_count=e.sample_count,
            dataset_watermark=e.dataset_watermark,
            metrics=e.metrics,
            error=ErrorInfo(type=e.error_type, message=e.error_message or "") if e.error_type else None,
            model_version=e.model_version,
            validation_passed=e.validation_passed,
            promoted=e.promoted,
            verdict=e.verdict,
            verdict_message=e.verdict_message,
            reason=e.reason,
        )


class TimelineEntry(View):
    at: datetime
    status: str
    message: str


class JobDetail(JobView):
    timeline: list[TimelineEntry]
    training_events: list[TrainingEventView] = Field(description="one per attempt that ended")

    @classmethod
    def of_job(cls, job: Job, events: list[TrainingEvent]) -> JobDetail:
        timeline = [TimelineEntry(at=job.created_at, status="queued", message=f"created with priority {job.priority}")]
        for e in events:
            timeline.append(
                TimelineEntry(
                    at=e.started_at,
                    status="in_progress",
                    message=f"attempt {e.attempt} started" + (f" on {e.worker}" if e.worker else ""),
                )
            )
            if e.finished_at is not None:
                if e.status is TrainingEventStatus.COMPLETED:
                    verdict = "promoted" if e.promoted else "not promoted"
                    message = f"attempt {e.attempt} completed: version {e.model_version}, {verdict}"
                else:
                    message = f"attempt {e.attempt} {e.status.value}" + (
                        f": {e.error_type}: {e.error_message}" if e.error_type else ""
                    )
                timeline.append(TimelineEntry(at=e.finished_at, status=e.status.value, message=message))
        if job.status is JobStatus.IN_PROGRESS and job.started_at is not None:
            timeline.append(
                TimelineEntry(
                    at=job.started_at,
                    status="in_progress",
                    message=f"attempt {job.attempts} running on {job.lease_owner}",
                )
            )
        elif job.status.is_final and job.finished_at is not None:
            timeline.append(
                TimelineEntry(
                    at=job.finished_at, status=job.status.value, message=job.error_message or job.status.value
                )
            )
        timeline.sort(key=lambda t: t.at)
        base = JobView.of(job).model_dump()
        return cls(**base, timeline=timeline, training_events=[TrainingEventView.of(e) for e in events])


class TriggerResponse(View):
    outcome: AdmissionOutcome = Field(
        description="created: a new waiting job; joined: the job already waiting for this dataset; "
        "duplicate: this Idempotency-Key was used before"
    )
    trigger_event_id: str
    job: JobView


class Admitted(View):
    dataset_id: str
    model_type: str
    job_id: uuid.UUID
    outcome: AdmissionOutcome


class AutoTriggerResponse(View):
    admitted: list[Admitted]


class WorkerView(View):
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    running_jobs: list[str]

    @classmethod
    def of(cls, w: WorkerHeartbeat) -> WorkerView:
        return cls(
            worker_id=w.worker_id,
            hostname=w.hostname,
            pid=w.pid,
            started_at=w.started_at,
            last_seen_at=w.last_seen_at,
            running_jobs=[str(j) for j in w.info.get("running_jobs", [])],
        )


class ModelTypeStatus(View):
    champion_version: int | None
    champion_since: datetime | None
    key_metric: str
    higher_is_better: bool
    last_run: TrainingEventView | None


class TrainingStatus(View):
    queue: dict[str, int] = Field(description="jobs per status")
    waiting: list[JobView] = Field(description="the first waiting jobs, in claim order")
    running: list[JobView]
    workers: list[WorkerView] = Field(description="trainer workers seen in the last three heartbeats")
    model_types: dict[str, ModelTypeStatus]
    generated_at: datetime


class TriggerView(View):
    event_id: str
    priority: int
    source: str = Field(description="where the trigger came from: kafka, http, retrain-sweep, …")
    received_at: datetime


class TriggerPage(View):
    items: list[TriggerView] = Field(description="in the order they arrived")
    next_after: str | None = Field(description="pass as `after` for the next page; null at the end")


class HistoryPage(View):
    items: list[TrainingEventView]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null at the end")


class ArtifactView(View):
    path: str
    sha256: str
    size: int
    format: str


class ModelVersionView(View):
    model_type: str
    version: int
    is_champion: bool
    parent_version: int | None = Field(description="lineage: the champion this version was validated against")
    training_event_id: uuid.UUID
    job_id: uuid.UUID
    dataset_id: str
    artifact: ArtifactView
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    dataset_watermark: int
    dataset_hash: str
    seed: int
    library_versions: dict[str, str]
    code_version: str
    info: dict[str, Any] = Field(
        default_factory=dict,
        description="the manifest's training info: sizes, timings; for goal the chosen family, every "
        "family's cross-validated ROC-AUC and the calibration",
    )
    created_at: datetime
    deleted_at: datetime | None = Field(
        default=None, description="when the retention removed it (its artifact is gone; it cannot serve again)"
    )

    @classmethod
    def of(cls, v: ModelVersion, champion: int | None) -> ModelVersionView:
        return cls(
            model_type=v.model_type,
            version=v.version,
            is_champion=v.version == champion,
            parent_version=v.parent_version,
            training_event_id=v.training_event_id,
            job_id=v.job_id,
            dataset_id=v.dataset_id,
            artifact=ArtifactView(
                path=v.artifact_path, sha256=v.artifact_sha256, size=v.artifact_size, format=v.artifact_format
            ),
            metrics=v.metrics,
            hyperparameters=v.hyperparameters,
            dataset_watermark=v.dataset_watermark,
            dataset_hash=v.dataset_hash,
            seed=v.seed,
            library_versions=v.library_versions,
            code_version=v.code_version,
            info=v.info,
            created_at=v.created_at,
            deleted_at=v.deleted_at,
        )


class ModelVersions(View):
    champions: dict[str, int | None] = Field(description="per model type its champion version")
    versions: list[ModelVersionView] = Field(description="a page of versions, newest first")
    ledger: list[ChampionMoveView] = Field(
        default_factory=list,
        description="a page of the champion's moves, newest first: validated, manual or rollback, "
        "with who or what made each and when",
    )
    next_before: str | None = Field(default=None, description="pass as `before` for older versions; null at the end")
    ledger_next_before: str | None = Field(
        default=None, description="pass as `ledger_before` for older moves; null at the end"
    )


class ChampionMoveView(View):
    model_type: str
    version: int
    previous_version: int | None
    reason: ChampionReason
    note: str | None = Field(default=None, description="the operator's reason of a manual promote")
    actor: str | None = Field(
        default=None, description="who or what made the move: 'job <id> on <worker>', or the operator"
    )
    event_id: uuid.UUID
    occurred_at: datetime

    @classmethod
    def of(cls, m: ChampionMove) -> ChampionMoveView:
        return cls(
            model_type=m.model_type,
            version=m.version,
            previous_version=m.previous_version,
            reason=m.reason,
            note=m.note,
            actor=m.actor,
            event_id=m.event_id,
            occurred_at=m.created_at,
        )


class PromoteBody(BaseModel):
    """Unknown extra fields are ignored, as in events."""

    model_config = ConfigDict(extra="ignore")
    reason: str = Field(min_length=1, max_length=500, description="why, kept in the champion ledger")
    expected_version: int | None = Field(
        default=None, ge=1, strict=True, description="refused (409) unless this version serves now"
    )


class RollbackBody(BaseModel):
    """Optional; unknown extra fields are ignored, as in events."""

    model_config = ConfigDict(extra="ignore")
    expected_version: int | None = Field(
        default=None, ge=1, strict=True, description="refused (409) unless this version serves now"
    )


class ChampionView(View):
    model_type: str
    version: int
    move: ChampionMoveView = Field(description="the ledger row that made it the champion")
    model: ModelVersionView = Field(description="the version: artifact checksum, metrics and manifest")


class PredictionsBody(BaseModel):
    """Predictions an app made, for apps that log them over HTTP rather than to the topic."""

    model_config = ConfigDict(extra="ignore")
    predictions: list[PredictionEvent] = Field(
        min_length=1, max_length=1000, description="`fcl.predictions` events (docs/contract.md), 1 to 1,000"
    )


class PredictionsAccepted(View):
    accepted: int = Field(description="events handed to the predictions topic (recorded once each, by event_id)")
    topic: str


class ShadowBody(BaseModel):
    """Unknown extra fields are ignored, as in events."""

    model_config = ConfigDict(extra="ignore")
    version: int = Field(ge=1, le=2**31 - 1, strict=True, description="the recorded version to score in the shadow")


class ShadowSide(View):
    """One side of a shadow comparison: a version's live figures over the pairs both scored."""

    version: int
    metrics: dict[str, Any] = Field(default_factory=dict, description="as in the live view")
    key: dict[str, Any] | None = Field(default=None, description="the key figure against the version's validated one")
    input_drift: dict[str, Any] | None = None


class ShadowView(View):
    """A model type's shadow challenger, and the champion and challenger over the same outcomes."""

    model_type: str
    challenger: int | None = Field(description="the version scored in the shadow; null: none")
    model: ModelVersionView | None = Field(
        default=None, description="the challenger's record: a watcher checks its artifact's sha256 and size"
    )
    set_by: str | None = None
    set_at: datetime | None = None
    window: str
    computed_at: datetime | None = Field(default=None, description="when a trainer worker compared them; null: not yet")
    predictions: int = Field(default=0, description="served predictions in the window that the challenger scored too")
    with_outcome: int = 0
    evaluated_pairs: int = Field(default=0, description="the newest pairs the figures are computed on (20,000 at most)")
    champion: ShadowSide | None = None
    shadow: ShadowSide | None = Field(default=None, description="the challenger's figures over the same pairs")
    comparison: dict[str, Any] | None = Field(
        default=None,
        description="the key figure of each (metric, champion, challenger, higher_is_better), the challenger's "
        "relative gain and which did better; null for segmentation",
    )


class ShadowCleared(View):
    model_type: str
    cleared: int | None = Field(description="the version that was the challenger; null: there was none")


class LiveQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    window: Literal["hour", "day"] = Field(default="day", description="the predictions of the last hour or day")


class LiveView(View):
    """A served version's live figures: its predictions joined with their outcomes over a window,
    by the definitions validation uses, and the drift of its live inputs from its training data."""

    model_type: str
    version: int
    window: str
    computed_at: datetime | None = Field(description="when a trainer worker computed them; null: not yet")
    predictions: int = Field(description="predictions made in the window")
    with_outcome: int = 0
    outcome_share: float | None = None
    repeated_outcomes: int = Field(
        default=0, description="outcomes after the first for one prediction: counted, not joined"
    )
    late_outcomes: int = Field(
        default=0, description="outcomes that arrived later than the window after their prediction"
    )
    unknown_outcomes: int = Field(
        default=0, description="outcomes waiting for a prediction fcl has not seen (of this model type, or unnamed)"
    )
    evaluated_pairs: int = Field(default=0, description="the newest pairs the metrics are computed on (20,000 at most)")
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="goal: roc_auc, brier, calibration_error, achieved_rate; spending: mae, seasonal_naive_mae, "
        "mae_ratio; recommendation: mean_reward, followed_share, replay_value; segmentation: segment_shares",
    )
    key: dict[str, Any] | None = Field(
        default=None, description="the live key metric against the version's validated one, and its relative drop"
    )
    input_drift: dict[str, Any] | None = Field(
        default=None, description="PSI of the live inputs against the version's training profile, per feature"
    )


class ValidationView(View):
    training_event_id: uuid.UUID
    job_id: uuid.UUID
    model_type: str
    candidate_version: int | None
    baseline_version: int | None
    metrics: dict[str, Any]
    checks: list[ValidationCheck] = Field(
        description="kind value: against a fixed bound; kind change: relative "
        "change (new-base)/|base| against the champion"
    )
    passed: bool
    promoted: bool
    verdict: VerdictKind | None = Field(
        description="passed, failed, incomparable (inputs differ from the champion's) or champion_unreadable; "
        "only passed promotes by itself"
    )
    message: str | None = Field(description="why, when the verdict is not passed")
    drift: Drift | None = Field(
        default=None,
        description="the candidate's training data against the champion's: PSI per input feature and the "
        "outcome's change; informational unless FCL_DRIFT_MAX_PSI is set; null without a champion profile",
    )


class ParkedEvent(View):
    """An outbox row the relay parked (read from `storage.entities.ParkedOutboxRow`'s attributes)."""

    model_config = ConfigDict(frozen=True, use_enum_values=True, from_attributes=True)

    id: int
    event_id: uuid.UUID
    topic: str
    key: str | None
    attempts: int = Field(description="tries the broker refused")
    last_error: str | None
    payload_bytes: int
    created_at: datetime
    parked_at: datetime


class OutboxState(View):
    pending: int = Field(description="events committed and not yet published")
    parked: list[ParkedEvent] = Field(description="a page of the events the relay gave up on, with their errors")
    next_after: str | None = Field(description="pass as `after` for the next page of parked events; null at the end")


class DatasetView(View):
    dataset_id: str
    model_type: str
    threshold: int
    samples_since_training: int = Field(description="the counter: samples since the last training")
    total_samples: int
    crossings: int = Field(description="how many times the counter reached its threshold")
    last_trained_at: datetime | None
    sample_shape: dict[str, Any] | None = Field(
        description="what every sample shares (feature names, state length); null after a reset"
    )
    shape_version: int = Field(description="adding features, or a reset, starts the next version")
    shape_from_id: int = Field(description="trainings read the samples after this id: the newest shape's")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: Dataset) -> DatasetView:
        return cls.model_validate(d, from_attributes=True)


class DeadLetterQuery(PageQuery):
    reason: FilterText | None = Field(default=None, description="only letters whose reason contains this")
    since: Timestamp | None = Field(default=None, description="only letters kept since then (RFC 3339)")


class DeadLetterView(View):
    id: int
    letter_id: uuid.UUID = Field(description="the `event_id` of its letter on the dead-letter topic")
    source_topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the record's key, as text (invalid UTF-8 replaced)")
    value_bytes: int = Field(description="the value's size as it arrived")
    kept_bytes: int = Field(description="how much of it is kept (up to FCL_MAX_EVENT_BYTES)")
    reason: str
    created_at: datetime
    replayed_at: datetime | None
    replays: int

    @classmethod
    def of(cls, d: StoredDeadLetter) -> DeadLetterView:
        return cls(
            id=d.id,
            letter_id=d.letter_id,
            source_topic=d.source_topic,
            partition=d.partition,
            offset=d.offset,
            key=d.key.decode("utf-8", errors="replace") if d.key is not None else None,
            value_bytes=d.value_bytes,
            kept_bytes=len(d.value or b""),
            reason=d.reason,
            created_at=d.created_at,
            replayed_at=d.replayed_at,
            replays=d.replays,
        )


class DeadLetterDetail(DeadLetterView):
    value: str | None = Field(description="the value kept, as text when it is UTF-8, else base64")
    value_encoding: Literal["text", "base64"]

    @classmethod
    def of_letter(cls, d: StoredDeadLetter) -> DeadLetterDetail:
        raw = d.value or b""
        try:
            value, encoding = raw.decode("utf-8"), "text"
        except UnicodeDecodeError:
            value, encoding = base64.b64encode(raw).decode(), "base64"
        return cls(
            **DeadLetterView.of(d).model_dump(), value=value if d.value is not None else None, value_encoding=encoding
        )


class DeadLetterPage(View):
    items: list[DeadLetterView]
    next_after: str | None = Field(description="pass as `after` for the next page; null at the end")


class ReplayBody(BaseModel):
    """Which kept inputs to send back through the door they came in by: `ids`, or every one whose
    reason contains `reason` and that was kept since `since`; at most `limit` per call."""

    model_config = ConfigDict(extra="ignore")
    ids: list[RowId] | None = Field(default=None, max_length=1000)
    reason: FilterText | None = None
    since: BodyTime | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class Replayed(View):
    replayed: int = Field(description="how many were sent back to their topic")
    ids: list[int] = Field(description="the ones sent")


class UnparkBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[RowId] | None = Field(
        default=None, max_length=10_000, description="the parked rows to put back in line; omitted: all of them"
    )


class Unparked(View):
    unparked: int = Field(description="how many parked events went back in line")


class Health(View):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    broker: Literal["ok", "unreachable", "not configured"]


class Liveness(View):
    status: Literal["ok"]


class Readiness(View):
    status: Literal["ready", "not ready"]
    checked: list[str] | None = Field(default=None, description="the checks that passed, when all did")
    not_ready: list[str] | None = Field(default=None, description="the names of the checks that failed")
