"""Samples a training can use: one bad sample must never disable a dataset's training for good.

Samples are checked at the door (contract.limits, the dataset's shape), but a dataset may hold
older ones stored before those checks. A training keeps the samples that have its model type's
shape and the dataset's most common shape (state length, feature names), and counts the rest,
which the manifest records as `skipped_samples`."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pydantic import ValidationError

from fcl.contract import model_types


def prepare() -> None:
    """Build every model type's validators now (the fork server does, so that no child does)."""
    for spec in model_types.specs():
        model_types.sample_validators(spec.name)


def usable_samples(model_type: str, samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(the samples a training can use, in order; how many were skipped)."""
    one, whole = model_types.sample_validators(model_type)
    valid: list[tuple[dict[str, Any], model_types.SampleShape]]
    try:
        valid = list(zip(samples, whole.validate_python(samples), strict=True))
    except ValidationError:
        valid = []
        for sample in samples:
            try:
                valid.append((sample, one.validate_python(sample)))
            except ValidationError:
                continue
    if not valid:
        return [], len(samples)
    keys = [json.dumps(p.shape(), sort_keys=True) for _, p in valid]
    common, _ = Counter(keys).most_common(1)[0]
    kept = [s for (s, _), key in zip(valid, keys, strict=True) if key == common]
    return kept, len(samples) - len(kept)
