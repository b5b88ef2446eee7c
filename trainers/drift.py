"""How far a candidate's training data moved from the champion's: for every input feature the
population stability index (PSI), and the change in the outcome's mean (a goal's achieved rate,
the recommender's reward, the spend).

Each recorded version keeps a `profile` of the samples it was trained from: per feature the edges
of its value bins (its minimum, deciles and maximum, with a bin below the minimum and one above the
maximum) and the share of values in each bin, and the outcome's mean. A candidate's samples are
binned with the CHAMPION's edges, so the two share the bins the PSI compares:

    PSI = sum over bins of (candidate share - champion share) * ln(candidate share / champion share)

with every share floored at `FLOOR` (an empty bin would make it infinite). Rule of thumb: below
0.1 the population is stable, 0.1-0.25 it moved, above 0.25 it moved a lot (`level`). A feature of
few distinct values gets a bin per distinct value among its deciles, a constant one a bin for its
value, and a value outside the champion's range always lands in a bin the champion left empty.
Drift is information for the verdict, not a gate, unless a limit on the largest PSI is set
(`FCL_DRIFT_MAX_PSI`). Pure numpy: it knows nothing of where the profiles are kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

BINS = 10
FLOOR = 1e-4
MODERATE, MAJOR = 0.1, 0.25

Columns = Mapping[str, np.ndarray]  # feature name -> one value per sample
Outcome = tuple[str, np.ndarray] | None  # (name, one value per sample): what the model predicts or earns


def _edges(values: np.ndarray) -> np.ndarray:
    """Bin i holds the values in (edges[i-1], edges[i]]: below the minimum, the minimum itself, the
    deciles, and above the maximum, so a value outside the reference's range always lands in a bin
    the reference left empty (a constant feature that changes is seen, in either direction)."""
    low = values.min()
    deciles = np.quantile(values, np.linspace(0, 1, BINS + 1)[1:], method="lower")  # values; the last the maximum
    return np.unique(np.concatenate(([np.nextafter(low, -np.inf), low], deciles)))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


def profile(columns: Columns, outcome: Outcome) -> dict[str, Any]:
    """What a later candidate's data is compared with: JSON-ready (plain floats and lists)."""
    features = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        edges = _edges(values)
        features[name] = {
            "edges": [float(e) for e in edges],
            "shares": [float(s) for s in _shares(values, edges)],
            "count": len(values),
            "mean": float(values.mean()),
        }
    result: dict[str, Any] = {"features": features, "outcome": None}
    if outcome is not None and len(outcome[1]):
        name, values = outcome
        result["outcome"] = {"name": name, "mean": float(np.mean(values)), "count": len(values)}
    return result


def psi(reference_shares: np.ndarray, shares: np.ndarray) -> float:
    r = np.maximum(np.asarray(reference_shares, dtype=np.float64), FLOOR)
    c = np.maximum(np.asarray(shares, dtype=np.float64), FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def level(value: float) -> str:
    return "major" if value > MAJOR else "moderate" if value > MODERATE else "stable"


def drift(
    columns: Columns, outcome: Outcome, reference: Mapping[str, Any], *, reference_version: int
) -> dict[str, Any]:
    """The candidate's data (`columns`, `outcome`) against the champion's `profile`, binned on the
    champion's edges. Features only one side has are named, not scored."""
    ref_features: Mapping[str, Any] = reference.get("features") or {}
    scored = {}
    for name in sorted(set(ref_features) & set(columns)):
        values = np.asarray(columns[name], dtype=np.float64)
        values = values[np.isfinite(values)]
        edges = np.asarray(ref_features[name]["edges"], dtype=np.float64)
        shares = np.asarray(ref_features[name]["shares"], dtype=np.float64)
        if len(values) == 0 or len(shares) != len(edges) + 1:
            continue
        scored[name] = psi(shares, _shares(values, edges))
    largest = max(scored.values(), default=0.0)
    result: dict[str, Any] = {
        "reference_version": reference_version,
        "psi": scored,
        "psi_max": largest,
        "level": level(largest),
        "features_only_in_champion": sorted(set(ref_features) - set(columns)),
        "features_only_in_candidate": sorted(set(columns) - set(ref_features)),
        "outcome": None,
    }
    before = reference.get("outcome")
    if before and outcome is not None and before.get("name") == outcome[0] and len(outcome[1]):
        after = float(np.mean(outcome[1]))
        change = after - float(before["mean"])
        base = abs(float(before["mean"]))
        result["outcome"] = {
            "name": outcome[0],
            "champion": float(before["mean"]),
            "candidate": after,
            "change": change,
            "relative_change": change / base if base else None,
        }
    return result
