"""The model versions' views and bodies: versions, champion moves, the champion, predictions over
HTTP, the shadow challenger, live figures and validation results."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fcl.contract.enums import ChampionReason, VerdictKind
from fcl.contract.events import Drift, PredictionEvent, ValidationCheck
from fcl.storage.entities import (
    ChampionMove,
    ModelVersion,
)
from fcl.web.schemas.common import View


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
