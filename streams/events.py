"""The contract's events as pydantic models (CONTRACT.md, "Kafka topics").

Input events are parsed leniently where the contract allows (unknown extra fields are ignored)
and strictly where it does not; every refusal comes back as a reason a person can act on, which
goes to the dead-letter topic with the raw event. Output events are built through the same
models, so what fcl publishes always has the documented shape. `docs/schemas/` holds the JSON
Schema of each (generated from these models by `python -m streams.schemas`).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from fcl.model_types import KNOWN, ModelType

# The namespace of ids fcl derives (threshold events from a dataset's crossing).
FCL_NAMESPACE = uuid.UUID("5b0b8a0e-7f0e-4c55-9f55-2f6c1e0f1c11")
DEAD_LETTER_VALUE_BYTES = 64 * 1024

EventId = Annotated[str, Field(min_length=1, max_length=200)]
DatasetId = Annotated[str, Field(min_length=1, max_length=200)]
Priority = Annotated[int, Field(ge=0, le=9)]


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None = None) -> str:
    return (value or now()).astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- sample shapes, one per model type -----------------------------------------------------------
class RecommendationSample(_Input):
    """One logged transition of the coaching-recommendation environment."""

    user_id: str
    episode_id: str
    t: int = Field(ge=0)
    state: list[float] = Field(min_length=1)
    action: int = Field(ge=0)
    reward: float
    next_state: list[float] = Field(min_length=1)
    done: bool
    behavior_prob: float | None = Field(default=None, gt=0, le=1)


class SegmentationSample(_Input):
    user_id: str
    features: dict[str, float] = Field(min_length=1)


class SpendingSample(_Input):
    """One user's spend on one day."""

    user_id: str
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    amount: float

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        datetime.strptime(value, "%Y-%m-%d")
        return value


class GoalSample(_Input):
    user_id: str
    goal_id: str
    features: dict[str, float] = Field(min_length=1)
    achieved: bool


SAMPLE_SHAPES: dict[ModelType, type[_Input]] = {
    ModelType.RECOMMENDATION: RecommendationSample,
    ModelType.SEGMENTATION: SegmentationSample,
    ModelType.SPENDING: SpendingSample,
    ModelType.GOAL: GoalSample,
}
_SAMPLE_LISTS = {mt: TypeAdapter(list[shape]) for mt, shape in SAMPLE_SHAPES.items()}  # type: ignore[valid-type]


# -- input events -----------------------------------------------------------------------------------
class TrainingSamplesEvent(_Input):
    """`training-samples`: new training data for a dataset (key: dataset_id)."""

    event_id: EventId
    dataset_id: DatasetId
    model_type: str
    occurred_at: datetime | None = None
    samples: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class DatasetThresholdEvent(_Input):
    """`dataset-threshold`: a dataset has enough new data to retrain on (key: dataset_id)."""

    event_id: EventId
    dataset_id: DatasetId
    model_type: str
    sample_count: int | None = Field(default=None, ge=0)
    threshold: int | None = Field(default=None, ge=0)
    priority: Priority = 5
    occurred_at: datetime | None = None


# -- output events ----------------------------------------------------------------------------------
class ErrorInfo(_Output):
    type: str
    message: str


class TrainingStatusEvent(_Output):
    """`training-status`: one per committed state change of a job (key: job_id)."""

    event_id: str
    job_id: str
    dataset_id: str
    model_type: str
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"]
    priority: Priority
    attempt: int = Field(ge=1)
    progress: float | None = Field(default=None, ge=0, le=1)
    message: str = ""
    error: ErrorInfo | None = None
    training_event_id: str | None = None
    model_version: int | None = None
    occurred_at: str


class ValidationCheckOut(_Output):
    metric: str
    value: float | None
    baseline: float | None
    threshold: float
    direction: Literal["higher_is_better", "lower_is_better"]
    passed: bool


class TrainingValidationEvent(_Output):
    """`training-validation`: one per validated candidate (key: job_id)."""

    event_id: str
    job_id: str
    training_event_id: str
    model_type: str
    candidate_version: int
    baseline_version: int | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float] | None
    checks: list[ValidationCheckOut]
    passed: bool
    promoted: bool
    occurred_at: str


class ModelVersionEvent(_Output):
    """`model-versions`: the champion of a model type changed (key: model_type)."""

    event_id: str
    model_type: str
    version: int
    previous_version: int | None
    reason: Literal["validated", "manual", "rollback"]
    occurred_at: str


class DeadLetterEvent(_Output):
    """`dead-letter`: an input event that could not be accepted, with the reason (key: the input's)."""

    event_id: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    value_encoding: Literal["text", "base64"] = "text"
    reason: str
    occurred_at: str


# -- parsing raw Kafka messages ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RawMessage:
    """A Kafka record as it arrived, before any parsing."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, kw_only=True)
class Rejected:
    message: RawMessage
    reason: str


@dataclass(frozen=True, kw_only=True)
class ParsedSamples:
    message: RawMessage
    event: TrainingSamplesEvent
    model_type: ModelType
    samples: list[dict[str, Any]]  # validated, in the contract's shape


@dataclass(frozen=True, kw_only=True)
class ParsedThreshold:
    message: RawMessage
    event: DatasetThresholdEvent
    model_type: ModelType


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{where or 'event'}: {err['msg']}")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _load(message: RawMessage, max_bytes: int) -> dict[str, Any] | Rejected:
    value = message.value
    if value is None:
        return Rejected(message=message, reason="empty value (a tombstone), expected a JSON object")
    if len(value) > max_bytes:
        return Rejected(message=message, reason=f"event of {len(value)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejected(message=message, reason=f"not valid JSON: {exc}")
    if not isinstance(data, dict):
        return Rejected(message=message, reason=f"schema: expected a JSON object, got {type(data).__name__}")
    return data


def _model_type(message: RawMessage, data: dict[str, Any]) -> ModelType | Rejected:
    raw = data.get("model_type")
    model_type = ModelType.parse(raw) if isinstance(raw, str) else None
    if model_type is None:
        return Rejected(message=message, reason=f"unknown model type {raw!r} (known: {KNOWN})")
    return model_type


def parse_threshold(message: RawMessage, *, max_bytes: int) -> ParsedThreshold | Rejected:
    data = _load(message, max_bytes)
    if isinstance(data, Rejected):
        return data
    priority = data.get("priority", 5)
    if isinstance(priority, int) and not isinstance(priority, bool) and not 0 <= priority <= 9:
        return Rejected(message=message, reason=f"priority {priority} outside 0-9")
    try:
        event = DatasetThresholdEvent.model_validate(data)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc)}")
    model_type = _model_type(message, data)
    if isinstance(model_type, Rejected):
        return model_type
    return ParsedThreshold(message=message, event=event, model_type=model_type)


def parse_samples(message: RawMessage, *, max_bytes: int) -> ParsedSamples | Rejected:
    data = _load(message, max_bytes)
    if isinstance(data, Rejected):
        return data
    try:
        event = TrainingSamplesEvent.model_validate(data)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc)}")
    model_type = _model_type(message, data)
    if isinstance(model_type, Rejected):
        return model_type
    try:
        shaped = _SAMPLE_LISTS[model_type].validate_python(event.samples)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc, 'samples')} (a {model_type} sample)")
    samples = [s.model_dump(mode="json") for s in shaped]
    return ParsedSamples(message=message, event=event, model_type=model_type, samples=samples)


def dead_letter(rejected: Rejected) -> DeadLetterEvent:
    msg = rejected.message
    raw = (msg.value or b"")[:DEAD_LETTER_VALUE_BYTES]
    try:
        value, encoding = raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetterEvent(
        event_id=str(uuid.uuid5(FCL_NAMESPACE, f"dead-letter:{msg.topic}:{msg.partition}:{msg.offset}")),
        source_topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key.decode("utf-8", errors="replace") if msg.key is not None else None,
        value=value,
        value_encoding=encoding,  # type: ignore[arg-type]
        reason=rejected.reason,
        occurred_at=rfc3339(),
    )


def threshold_event_id(dataset_id: str, crossing: int) -> str:
    """The id of the dataset-threshold event for a dataset's `crossing`-th crossing: the same
    on every replay, so a crash and reprocessing emit the same event, not a second one."""
    return str(uuid.uuid5(FCL_NAMESPACE, f"threshold:{dataset_id}:{crossing}"))


def queued_status(
    *, job_id: uuid.UUID, dataset_id: str, model_type: str, priority: int, attempts: int, message: str = "queued"
) -> TrainingStatusEvent:
    return TrainingStatusEvent(
        event_id=str(uuid.uuid4()),
        job_id=str(job_id),
        dataset_id=dataset_id,
        model_type=model_type,
        status="queued",
        priority=priority,
        attempt=attempts + 1,
        message=message,
        occurred_at=rfc3339(),
    )


def job_status_event(
    job: Any,
    status: str,
    *,
    attempt: int | None = None,
    message: str = "",
    progress: float | None = None,
    error: tuple[str, str] | None = None,
    training_event_id: uuid.UUID | None = None,
    model_version: int | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """A training-status event for `job` (storage's Job) as an outbox row: (topic, key, payload).
    `attempt` defaults to the job's attempts (at least 1)."""
    from streams.topics import Topic

    event = TrainingStatusEvent(
        event_id=str(uuid.uuid4()),
        job_id=str(job.id),
        dataset_id=job.dataset_id,
        model_type=job.model_type,
        status=status,
        priority=job.priority,
        attempt=max(1, attempt if attempt is not None else job.attempts),  # type: ignore[arg-type]
        progress=progress,
        message=message,
        error=ErrorInfo(type=error[0], message=error[1]) if error else None,
        training_event_id=str(training_event_id) if training_event_id else None,
        model_version=model_version,
        occurred_at=rfc3339(),
    )
    return (Topic.TRAINING_STATUS, str(job.id), event.model_dump(mode="json"))
