"""What every trainer shares: the interface, its inputs and results, errors, progress, devices.

A trainer takes the dataset's samples (dicts in the contract's shape), hyperparameters, a seed and,
when there is one, the current champion's artifact. `fit` makes a candidate from the training
part of the samples; `evaluate` judges a candidate AND the champion on the same held-out part (so
the comparison is fair), which the same samples always split the same way; `artifact` and `load`
turn a model into bytes and back. Because `evaluate` takes any candidate, one that was fitted
before (loaded from its artifact) can be judged again against a champion that changed since,
without training it again. `train` is fit, evaluate and artifact in one call.
It knows nothing of Kafka or SQL.
"""

from __future__ import annotations

import math
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from fcl.contract.artifacts import Artifact as Artifact  # trainers hand their models over as this
from fcl.trainers.drift import Outcome
from fcl.trainers.gates import Gate

Progress = Callable[[float], None]  # fraction done, 0..1
# A feature name -> one value per sample, and the outcome (name, one value per sample) or None:
# what `trainers.drift` profiles.
DataColumns = tuple[dict[str, np.ndarray], Outcome]


class TrainingError(Exception):
    """A training failed; `retriable` says whether another attempt may succeed."""

    retriable: ClassVar[bool] = True


class InvalidDataError(TrainingError):
    """The samples cannot train this model (too few, inconsistent features, ...): retrying the
    same data cannot help."""

    retriable = False


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite."""

    retriable = True


class UnknownModelTypeError(TrainingError):
    retriable = False


def check_finite(value: float, *, what: str, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(f"{what} became {value} at step {step}; training stopped")


@dataclass(frozen=True)
class Fitted:
    """A candidate just fitted, before it is judged."""

    model: Any  # what `evaluate`, `artifact` and `policy`-like helpers take; `load` returns the same kind
    hyperparameters: dict[str, Any]  # the defaults with the request's overrides
    metrics: dict[str, float] = field(default_factory=dict)  # what the fit itself measured (final losses)
    info: dict[str, Any] = field(default_factory=dict)  # sizes, steps, timings: for the manifest


@dataclass(frozen=True)
class Evaluation:
    """A candidate and the champion on the same held-out data."""

    model: Any  # the candidate as it is stored (segmentation numbers its segments like the champion's)
    metrics: dict[str, float]  # the candidate
    baseline_metrics: dict[str, float] | None  # the champion; None without one; {} when it cannot be compared
    info: dict[str, Any] = field(default_factory=dict)
    incomparable: str | None = None  # how the candidate's inputs differ from the champion's, when they do


@dataclass(frozen=True)
class TrainResult:
    model: Any  # the fitted candidate, usable in this process
    metrics: dict[str, float]  # the candidate on the held-out data
    baseline_metrics: dict[str, float] | None  # the champion on the SAME held-out data, or None
    artifact: Artifact
    hyperparameters: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # sizes, steps, timings: for the manifest


@dataclass(frozen=True)
class TrainRequest:
    samples: Sequence[dict[str, Any]]  # any iterable of samples is accepted and materialized
    seed: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # overrides of the defaults
    champion: Artifact | None = None
    progress: Progress = lambda fraction: None
    device: str | None = None  # torch trainers: None picks CUDA when present, else the CPU

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Sequence):  # any iterable of samples: a generator, a cursor
            object.__setattr__(self, "samples", list(self.samples))


class Trainer(ABC):
    model_type: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    gate: ClassVar[Gate]

    def hyperparameters(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise InvalidDataError(f"unknown hyperparameters for {self.model_type}: {sorted(unknown)}")
        return {**self.defaults, **overrides}

    @abstractmethod
    def fit(self, request: TrainRequest) -> Fitted:
        """A candidate from the training part of the request's samples."""

    @abstractmethod
    def evaluate(self, model: Any, request: TrainRequest) -> Evaluation:
        """`model` (from `fit` or `load`) and the request's champion on the held-out part of the
        request's samples. Deterministic for the same samples, seed and hyperparameters."""

    @abstractmethod
    def data_columns(self, samples: Sequence[dict[str, Any]]) -> DataColumns:
        """The samples' inputs as one column per feature, and the outcome (name, values) whose mean
        the verdict's drift compares (`trainers.drift`); samples a training accepted."""

    def assess(self, model: Any, request: TrainRequest) -> Evaluation:
        """`evaluate`, its time in the evaluation's info (`evaluation_seconds`)."""
        started = time.perf_counter()
        evaluation = self.evaluate(model, request)
        return replace(evaluation, info=evaluation.info | {"evaluation_seconds": time.perf_counter() - started})

    @abstractmethod
    def artifact(self, model: Any) -> Artifact:
        """The model as bytes that cannot run code when loaded."""

    @abstractmethod
    def load(self, artifact: Artifact) -> Any:
        """The model an artifact holds (for serving, as the champion, or a candidate judged again)."""

    def train(self, request: TrainRequest) -> TrainResult:
        """Fit a candidate, judge it and the champion, and serialize it."""
        fitted = self.fit(request)
        evaluation = self.assess(fitted.model, replace(request, hyperparameters=fitted.hyperparameters))
        started = time.perf_counter()
        artifact = self.artifact(evaluation.model)
        info = fitted.info | evaluation.info | {"artifact_seconds": time.perf_counter() - started}
        return TrainResult(
            model=evaluation.model,
            metrics=evaluation.metrics | fitted.metrics,
            baseline_metrics=evaluation.baseline_metrics,
            artifact=artifact,
            hyperparameters=fitted.hyperparameters,
            info=info,
        )


def _names(names: Sequence[str], most: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return f"[{shown}{', ...' if len(names) > most else ''}] ({len(names)})"


def feature_difference(champion: Sequence[str], candidate: Sequence[str]) -> str | None:
    """How two models' feature lists differ, in words; None when they are the same."""
    champion, candidate = list(champion), list(candidate)
    if champion == candidate:
        return None
    gone = [f for f in champion if f not in candidate]
    new = [f for f in candidate if f not in champion]
    parts = []
    if gone:
        parts.append(f"the champion's features {_names(gone)} are not the candidate's")
    if new:
        parts.append(f"the candidate's features {_names(new)} are not the champion's")
    return "features differ: " + ("; ".join(parts) or "the same features in another order")


def value_difference(what: str, champion: Any, candidate: Any) -> str | None:
    """`what` differs between champion and candidate, in words; None when it does not."""
    return None if champion == candidate else f"{what} differs: champion {champion!r}, candidate {candidate!r}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)


def torch_device(requested: str | None) -> Any:
    import torch

    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def deterministic_torch(device: Any) -> None:
    """Same seed, same data, same result on the CPU: deterministic algorithms, fixed threads: the
    `OMP_NUM_THREADS` the process was given (torch read it at import), otherwise up to 4 cores.
    (Overriding an explicit 1 made two trainings on 2 cores each spin 2 OpenMP threads against
    the other's: 4 to 10 times slower than one thread each.)"""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def require(samples: Sequence[Any], minimum: int, what: str) -> None:
    if len(samples) < minimum:
        raise InvalidDataError(f"{what}: {len(samples)} samples, at least {minimum} needed")


def stable_bucket(key: str, buckets: int) -> int:
    """A bucket for `key` that never changes between runs, machines or retrains."""
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % buckets
