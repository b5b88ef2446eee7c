"""Feature matrices from samples whose `features` are a name -> number mapping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fcl.trainers.base import InvalidDataError


def feature_matrix(
    samples: Sequence[dict[str, Any]], names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Rows in sample order, columns in `names` order (default: the sorted names of the first
    sample). Every sample must carry exactly those features, as finite numbers."""
    if not samples:
        raise InvalidDataError("no samples")
    names = list(names) if names is not None else sorted(samples[0]["features"])
    expected = set(names)
    x = np.empty((len(samples), len(names)), dtype=np.float64)
    for i, sample in enumerate(samples):
        features = sample["features"]
        if set(features) != expected:
            missing, extra = sorted(expected - set(features)), sorted(set(features) - expected)
            raise InvalidDataError(
                f"sample {i} (user {sample.get('user_id')!r}) has features that differ from the "
                f"dataset's: missing {missing}, unexpected {extra}"
            )
        x[i] = [features[n] for n in names]
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise InvalidDataError(f"sample {row} has a non-finite feature value")
    return x, names
