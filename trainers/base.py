"""What every trainer shares: the interface, its inputs and results, errors, progress, devices.

A trainer takes the dataset's samples (dicts in the contract's shape), hyperparameters, a seed and,
when there is one, the current champion's artifact; it fits a candidate, evaluates the candidate
AND the champion on the same held-out data (so the comparison is fair), and returns the metrics,
the artifact bytes and the manifest. It knows nothing of Kafka or SQL.
"""

from __future__ import annotations

import math
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from trainers.gates import Gate

Progress = Callable[[float], None]  # fraction done, 0..1


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
class Artifact:
    """A serialized model: bytes in a format that cannot run code when loaded."""

    data: bytes
    format: str  # "safetensors" or "skops"


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
    samples: Iterable[dict[str, Any]]  # kept as a Sequence (materialized when an iterator is given)
    seed: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # overrides of the defaults
    champion: Artifact | None = None
    progress: Progress = lambda fraction: None  # noqa: E731
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
    def train(self, request: TrainRequest) -> TrainResult: ...

    @abstractmethod
    def load(self, artifact: Artifact) -> Any:
        """The model an artifact holds (for serving, or as the champion to compare against)."""


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
    """Same seed, same data, same result on the CPU: deterministic algorithms, fixed threads."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def require(samples: Sequence[Any], minimum: int, what: str) -> None:
    if len(samples) < minimum:
        raise InvalidDataError(f"{what}: {len(samples)} samples, at least {minimum} needed")


def stable_bucket(key: str, buckets: int) -> int:
    """A bucket for `key` that never changes between runs, machines or retrains."""
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % buckets
