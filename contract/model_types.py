"""The model types fcl trains (docs/contract.md, "Model types"): the one list every part reads.

Each model type is one `register(ModelTypeSpec(...))` below: its name, the shape of its samples,
the trainer that fits it (a `module:Class` path that `trainers.registry` imports), its default
dataset threshold (`FCL_THRESHOLD_<TYPE>` overrides it), its default training window
(`FCL_TRAIN_WINDOW_<TYPE>`) and the metric the dashboard plots.
Settings, the event schemas, the CLI, the HTTP API's validation and the trainer registry all read
this registry, so adding a model type is one trainer module and one registration here.
Anything not registered is an unknown model type.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from fcl.contract import limits


class SampleShape(BaseModel):
    """A sample of a model type as producers send it; unknown extra fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def shape(self) -> dict[str, object]:
        """What every sample of one dataset must share (state length, feature names); {} when
        the model type has nothing of the kind."""
        return {}


@dataclass(frozen=True, kw_only=True)
class ModelTypeSpec:
    name: str
    summary: str
    sample: type[SampleShape]
    trainer: str  # "module:Class" of its `trainers.base.Trainer`
    default_threshold: int  # samples since the last training that make a dataset ready
    # A training reads the most recent N samples of its dataset (FCL_TRAIN_WINDOW_<TYPE> overrides
    # it): what bounds a training's memory, and what the sample retention keeps at least.
    default_window: int = 200_000
    key_metric: str  # plotted across versions
    higher_is_better: bool
    # What a served model takes, answers and later learns happened (`fcl.predictions`, `fcl.outcomes`).
    input: type[SampleShape]  # a sample without its outcome fields
    prediction: type[SampleShape]
    outcome: type[SampleShape] | None

    @property
    def threshold_variable(self) -> str:
        return f"FCL_THRESHOLD_{self.name.upper()}"


_REGISTRY: dict[str, ModelTypeSpec] = {}


def register(spec: ModelTypeSpec) -> ModelTypeSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"model type {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def names() -> tuple[str, ...]:
    """Every registered model type, in registration order."""
    return tuple(_REGISTRY)


def specs() -> tuple[ModelTypeSpec, ...]:
    return tuple(_REGISTRY.values())


def known() -> str:
    """The registered names, for messages: "recommendation, segmentation, ..."."""
    return ", ".join(_REGISTRY)


def parse(value: object) -> str | None:
    """The model type `value` names, or None when it names none."""
    return value if isinstance(value, str) and value in _REGISTRY else None


def spec(name: str) -> ModelTypeSpec:
    """The registration of a model type; KeyError (naming the known ones) for anything else."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model type {name!r} (known: {known()})") from None


# -- the registrations ------------------------------------------------------------------------------
# Fields of the sample shapes, bounded by contract.limits (every number is also finite and within
# MAX_NUMBER: parsing checks the whole document first).
Id = Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)]
Number = Annotated[float, Field(allow_inf_nan=False, ge=-limits.MAX_NUMBER, le=limits.MAX_NUMBER)]
State = Annotated[list[Number], Field(min_length=1, max_length=limits.MAX_STATE_LENGTH)]
Features = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=limits.MAX_ID_CHARS)], Number],
    Field(min_length=1, max_length=limits.MAX_FEATURES),
]


class RecommendationSample(SampleShape):
    """One logged transition of the coaching-recommendation environment."""

    user_id: Id
    episode_id: Id
    t: int = Field(ge=0, le=limits.MAX_STEP)
    state: State
    action: int = Field(ge=0, lt=limits.MAX_ACTIONS)
    reward: Number
    next_state: State
    done: bool
    behavior_prob: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _states_alike(self) -> RecommendationSample:
        if len(self.next_state) != len(self.state):
            raise ValueError(f"next_state has {len(self.next_state)} values, state {len(self.state)}")
        return self

    def shape(self) -> dict[str, object]:
        return {"state_length": len(self.state)}


class SegmentationSample(SampleShape):
    user_id: Id
    features: Features

    def shape(self) -> dict[str, object]:
        return {"features": sorted(self.features)}


class SpendingSample(SampleShape):
    """One user's spend on one day."""

    user_id: Id
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    amount: Number

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        limits.check_date(datetime.strptime(value, "%Y-%m-%d").date())
        return value


class GoalSample(SampleShape):
    user_id: Id
    goal_id: Id
    features: Features
    achieved: bool

    def shape(self) -> dict[str, object]:
        return {"features": sorted(self.features)}


# What a served model takes: the sample shapes without their outcome fields (serving.predict).
class GoalInput(SampleShape):
    user_id: Id
    goal_id: Id | None = None
    features: Features


class SegmentationInput(SampleShape):
    user_id: Id
    features: Features


class RecommendationInput(SampleShape):
    user_id: Id | None = None
    state: State
    mask: list[bool] | None = Field(default=None, min_length=1, max_length=limits.MAX_ACTIONS)

    @model_validator(mode="after")
    def _some_action_allowed(self) -> RecommendationInput:
        if self.mask is not None and not any(self.mask):
            raise ValueError("mask allows no action")
        return self


# What it answers (as serving.predict returns it), and what happened after (`fcl.outcomes`).
MAX_HORIZON = 366  # days of a spending forecast or of its outcome
Probability = Annotated[float, Field(allow_inf_nan=False, ge=0, le=1)]
Action = Annotated[int, Field(ge=0, lt=limits.MAX_ACTIONS)]


class DayAmount(SampleShape):
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    amount: Annotated[float, Field(allow_inf_nan=False, ge=0, le=limits.MAX_NUMBER)]

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        limits.check_date(datetime.strptime(value, "%Y-%m-%d").date())
        return value


Days = Annotated[list[DayAmount], Field(min_length=1, max_length=MAX_HORIZON)]


class GoalPrediction(SampleShape):
    probability: Probability


class SegmentationPrediction(SampleShape):
    segment: int = Field(ge=0, le=limits.MAX_STEP)
    distance: Number | None = None


class SpendingPrediction(SampleShape):
    user_id: Id | None = None
    forecast: Days


class RecommendationPrediction(SampleShape):
    action: Action
    q_values: list[Number | None] | None = Field(default=None, max_length=limits.MAX_ACTIONS)


class GoalOutcome(SampleShape):
    achieved: bool


class SpendingOutcome(SampleShape):
    amounts: Days  # what the user spent on the forecast's days that have passed


class RecommendationOutcome(SampleShape):
    action: Action  # the action the user was given (the policy's, or another)
    reward: Number


RECOMMENDATION = register(
    ModelTypeSpec(
        name="recommendation",
        summary="discrete-action Conservative Q-Learning recommender (PyTorch)",
        sample=RecommendationSample,
        input=RecommendationInput,
        prediction=RecommendationPrediction,
        outcome=RecommendationOutcome,
        trainer="fcl.trainers.recommendation:RecommendationTrainer",
        default_threshold=5000,
        default_window=500_000,
        key_metric="fqe_value",
        higher_is_better=True,
    )
)
SEGMENTATION = register(
    ModelTypeSpec(
        name="segmentation",
        summary="K-means user segmentation (scikit-learn)",
        sample=SegmentationSample,
        input=SegmentationInput,
        prediction=SegmentationPrediction,
        outcome=None,  # a segment has no outcome to wait for: its live figures are its shares and drift
        trainer="fcl.trainers.segmentation:SegmentationTrainer",
        default_threshold=2000,
        default_window=200_000,
        key_metric="silhouette",
        higher_is_better=True,
    )
)
SPENDING = register(
    ModelTypeSpec(
        name="spending",
        summary="LSTM daily spending forecaster (PyTorch)",
        sample=SpendingSample,
        input=SpendingSample,
        prediction=SpendingPrediction,
        outcome=SpendingOutcome,
        trainer="fcl.trainers.spending:SpendingTrainer",
        default_threshold=5000,
        default_window=730_000,
        key_metric="mae",
        higher_is_better=False,
    )
)
GOAL = register(
    ModelTypeSpec(
        name="goal",
        summary="Random Forest savings-goal classifier (scikit-learn)",
        sample=GoalSample,
        input=GoalInput,
        prediction=GoalPrediction,
        outcome=GoalOutcome,
        trainer="fcl.trainers.goal:GoalTrainer",
        default_threshold=2000,
        default_window=200_000,
        key_metric="roc_auc",
        higher_is_better=True,
    )
)


@functools.cache
def sample_validators(name: str) -> tuple[TypeAdapter[SampleShape], TypeAdapter[list[SampleShape]]]:
    """The validators of one sample of model type `name` and of a list of them, built once per
    process (building one costs more than validating thousands of samples): the streams parser
    and the training child's sample check use the same ones."""
    shape = spec(name).sample
    return TypeAdapter(shape), TypeAdapter(list[shape])  # type: ignore[valid-type]


def input_shapes() -> dict[str, type[SampleShape]]:
    """What each served model takes: a spending input is a day of the user's history."""
    return {s.name: s.input for s in _REGISTRY.values()}


def _known_name(value: str) -> str:
    if parse(value) is None:
        raise ValueError(f"unknown model type {value[:100]!r} (known: {known()})")
    return value


# A model type in a pydantic model: validated against the registry, documented as its enum (the
# registrations above are complete by now).
ModelTypeName = Annotated[str, AfterValidator(_known_name), WithJsonSchema({"type": "string", "enum": list(_REGISTRY)})]
