"""The contract's events as pydantic models (docs/contract.md, "Kafka topics").

Input events are parsed leniently where the contract allows (unknown extra fields are ignored)
and strictly where it does not. Output events are built through the same models, so what fcl
publishes always has the documented shape. `docs/schemas/` holds the JSON Schema of each
(generated from these models by `python -m fcl.contract.schemas`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from fcl.contract import limits
from fcl.contract.enums import ChampionReason, CheckKind, Direction, JobStatus, VerdictKind

# The namespace of ids fcl derives (threshold events from a dataset's crossing, dead letters).
FCL_NAMESPACE = uuid.UUID("5b0b8a0e-7f0e-4c55-9f55-2f6c1e0f1c11")

EventId = Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)]
DatasetId = Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)]
Priority = Annotated[int, Field(ge=0, le=9)]
# An input timestamp: RFC 3339 (naive is read as UTC), years MIN_YEAR..MAX_YEAR (contract.limits).
Timestamp = Annotated[datetime, AfterValidator(limits.check_timestamp)]
Count = Annotated[int, Field(ge=0, le=int(limits.MAX_NUMBER))]
# A free-text output field (reason, error message): cut to MAX_MESSAGE_CHARS, so no payload grows
# with the input that caused it.
Message = Annotated[str, BeforeValidator(lambda v: limits.clip(v) if isinstance(v, str) else v)]


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None = None) -> str:
    return (value or now()).astimezone(UTC).isoformat().replace("+00:00", "Z")


def threshold_event_id(dataset_id: str, crossing: int, namespace: uuid.UUID = FCL_NAMESPACE) -> str:
    """The id of the dataset-threshold event for a dataset's `crossing`-th crossing: the same
    on every replay, so a crash and reprocessing emit the same event, not a second one. fcl passes
    its database's own random namespace (`installation.trigger_namespace`), so no producer can
    compute a future crossing's id and send it first."""
    return str(uuid.uuid5(namespace, f"threshold:{dataset_id}:{crossing}"))


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- input events -----------------------------------------------------------------------------------
class TrainingSamplesEvent(_Input):
    """`training-samples`: new training data for a dataset (key: dataset_id)."""

    event_id: EventId
    dataset_id: DatasetId
    model_type: str
    occurred_at: Timestamp | None = None
    samples: list[dict[str, Any]] = Field(min_length=1, max_length=limits.MAX_SAMPLES_PER_EVENT)


class DatasetThresholdEvent(_Input):
    """`dataset-threshold`: a dataset has enough new data to retrain on (key: dataset_id)."""

    event_id: EventId
    dataset_id: DatasetId
    model_type: str
    sample_count: Count | None = None
    threshold: Count | None = None
    priority: Priority = 5
    occurred_at: Timestamp | None = None


class PredictionEvent(_Input):
    """`predictions`: a prediction a served version made (key: model_type). `inputs` are the
    records it was given (a spending forecast's: the user's days; the others': one record), or
    only their digest; live input drift is measured on the predictions that carry them."""

    event_id: EventId
    prediction_id: EventId
    model_type: str
    # strict: a version is an integer and `shadow` a boolean, as the schema says (not "5" or 0.0)
    version: int = Field(ge=1, le=2**31 - 1, strict=True)
    subject: Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)] | None = None
    inputs: dict[str, Any] | list[dict[str, Any]] | None = None
    inputs_digest: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    prediction: dict[str, Any]
    shadow: bool = Field(default=False, strict=True)  # scored by a shadow challenger beside the champion, not served
    occurred_at: Timestamp | None = None


class OutcomeEvent(_Input):
    """`outcomes`: what happened after a prediction (key: prediction_id): the model type's outcome
    shape (goal `achieved`; spending `amounts`, the days that passed; recommendation the `action`
    given and its `reward`). `model_type`, when given, is checked against the prediction's."""

    event_id: EventId
    prediction_id: EventId
    model_type: str | None = None
    outcome: dict[str, Any]
    occurred_at: Timestamp | None = None


# -- output events ----------------------------------------------------------------------------------
class ErrorInfo(_Output):
    type: Message
    message: Message


class ValidationCheck(_Output):
    """One check of a candidate, the one shape everywhere: as the gate decided it, as storage
    keeps it, as the validation event and the HTTP API show it."""

    metric: str
    kind: CheckKind = CheckKind.VALUE
    value: float | None = Field(
        description="the candidate's metric (value check) or its relative change "
        "(new - base) / |base| against the champion (change check)"
    )
    baseline: float | None = Field(description="the champion's metric on the same held-out data")
    threshold: float
    direction: Direction
    passed: bool


class TrainingStatusEvent(_Output):
    """`training-status`: one per committed state change of a job (key: job_id)."""

    event_id: str
    job_id: str
    dataset_id: str
    model_type: str
    status: JobStatus
    priority: Priority
    attempt: int = Field(ge=1)
    progress: float | None = Field(default=None, ge=0, le=1)
    message: Message = ""
    error: ErrorInfo | None = None
    training_event_id: str | None = None
    model_version: int | None = None
    occurred_at: str
    reason: dict[str, Any] | None = Field(
        default=None,
        description="why the job was queued: `kind` (threshold, operator, live_drop, input_drift, "
        "champion_age) and the figures that made it; null for a job queued before reasons existed",
    )


class OutcomeShift(_Output):
    """The change of the mean of what the model predicts or earns, champion's data to candidate's."""

    name: str = Field(description="achieved_rate (goal), reward_mean (recommendation), amount_mean (spending)")
    champion: float
    candidate: float
    change: float = Field(description="candidate - champion")
    relative_change: float | None = Field(description="change / |champion|; null when the champion's mean is 0")


class Drift(_Output):
    """How far the candidate's training data moved from the champion's: informational, not a gate,
    unless FCL_DRIFT_MAX_PSI sets a limit on `psi_max` (then a `drift_psi_max` check decides too)."""

    reference_version: int = Field(description="the champion whose training data is the reference")
    psi: dict[str, float] = Field(description="population stability index of every input feature both have")
    psi_max: float
    level: Literal["stable", "moderate", "major"] = Field(description="psi_max: < 0.1, 0.1-0.25, > 0.25")
    features_only_in_champion: list[str] = Field(default_factory=list)
    features_only_in_candidate: list[str] = Field(default_factory=list)
    outcome: OutcomeShift | None = None


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
    checks: list[ValidationCheck]
    passed: bool
    promoted: bool
    occurred_at: str
    verdict: VerdictKind | None = None  # None only in events published before verdicts existed
    message: Message | None = None  # why, when the verdict is not `passed`
    # the candidate's training data against the champion's; None without a champion, or when the
    # champion's version predates data profiles
    drift: Drift | None = None


class ModelVersionEvent(_Output):
    """`model-versions`: the champion of a model type changed (key: model_type)."""

    event_id: str
    model_type: str
    version: int
    previous_version: int | None
    reason: ChampionReason
    occurred_at: str


class DeadLetterEvent(_Output):
    """`dead-letter`: an input event that could not be accepted, with the reason (key: the input's)."""

    event_id: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str = Field(description="the start of the raw value: the whole letter is at most 64 KiB")
    value_encoding: Literal["text", "base64"] = "text"
    reason: Message
    occurred_at: str
