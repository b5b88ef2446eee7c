"""The manifest of a training result: enough to know exactly what produced a model."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "scikit-learn", "numpy", "scipy", "safetensors", "skops")


def dataset_hash(samples: Iterable[dict[str, Any]]) -> str:
    """sha256 over the samples in order, each as canonical JSON (sorted keys, no spaces)."""
    h = hashlib.sha256()
    for sample in samples:
        h.update(json.dumps(sample, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@lru_cache(maxsize=1)
def code_version() -> str:
    """The fcl package version and a hash of the trainers' source: changes whenever the code that
    trains does."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    try:
        version = metadata.version("fcl")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"{version}+{h.hexdigest()[:12]}"


@dataclass(frozen=True, kw_only=True)
class Manifest:
    model_type: str
    seed: int
    hyperparameters: dict[str, Any]
    dataset_watermark: int | None
    dataset_hash: str
    library_versions: dict[str, str]
    code_version: str
    info: dict[str, Any]


def build_manifest(
    *,
    model_type: str,
    seed: int,
    hyperparameters: dict[str, Any],
    samples: Iterable[dict[str, Any]],
    dataset_watermark: int | None,
    info: dict[str, Any],
) -> Manifest:
    return Manifest(
        model_type=model_type,
        seed=seed,
        hyperparameters=hyperparameters,
        dataset_watermark=dataset_watermark,
        dataset_hash=dataset_hash(samples),
        library_versions=library_versions(),
        code_version=code_version(),
        info=info,
    )
