"""The typed messages between a trainer worker and its training child (pickled over a pipe).

The worker sends one `TrainingTask`; the child answers with any number of `Progress`, then one
`Outcome` or one `Failure`."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from fcl.storage.artifacts import S3Access
from fcl.storage.entities import Candidate, StoredArtifactRef


class Mode(enum.StrEnum):
    FIT = "fit"  # fit a candidate, judge it and the champion, write its artifact
    EVALUATE = "evaluate"  # judge a candidate fitted before (its artifact) against a champion that moved since


@dataclass(frozen=True, kw_only=True)
class TrainingTask:
    mode: Mode
    database_url: str
    artifact_url: str  # the artifact store (storage.artifacts.ArtifactStore)
    s3: S3Access
    job_id: uuid.UUID
    attempt: int
    model_type: str
    dataset_id: str
    watermark: int  # the samples with id <= watermark, the same for every round of one attempt
    window: int | None = None  # only the most recent N of them (FCL_TRAIN_WINDOW_<TYPE>)
    after: int = 0  # only those after this id: the samples of the dataset's newest shape
    shape_version: int = 1
    seed: int
    hyperparameters: dict[str, Any]
    device: str | None
    champion: StoredArtifactRef | None
    champion_version: int | None
    champion_profile: dict[str, Any] | None = None  # the champion's training data (trainers.drift)
    drift_max_psi: float | None = None  # FCL_DRIFT_MAX_PSI: drift becomes a check of the gate
    # The champion's reference set: the held-out part of the samples the champion was judged on
    # (its dataset up to its watermark, within its window). A candidate of another dataset is
    # judged there too, so no dataset can take the champion of the whole model type by itself.
    champion_dataset_id: str | None = None
    champion_watermark: int | None = None
    champion_window: int | None = None
    champion_after: int = 0
    # FCL_CHAMPION_DATASETS: False when this dataset may not make a champion of its type
    may_promote: bool = True
    candidate: StoredArtifactRef | None = None  # EVALUATE: the candidate to judge again
    fit_metrics: dict[str, float] = field(default_factory=dict)  # EVALUATE: what its fit measured
    fit_seconds: float = 0.0  # EVALUATE: how long its fit took
    fit_info: dict[str, Any] = field(default_factory=dict)  # EVALUATE: what its fit recorded for the manifest


@dataclass(frozen=True, kw_only=True)
class Progress:
    fraction: float  # 0..1


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """The child's answer: the judged candidate, and what its fit recorded (kept by the worker in
    case the candidate has to be judged again against a champion that moved)."""

    candidate: Candidate
    fit_metrics: dict[str, float]
    fit_info: dict[str, Any] = field(default_factory=dict)
    peak_rss_bytes: int | None = None  # the child's largest resident set, when it answered


@dataclass(frozen=True, kw_only=True)
class Failure:
    type: str
    message: str
    retriable: bool


ChildMessage = Progress | Outcome | Failure
