"""The live figures of a served version: its predictions joined with what happened after, by the
same definitions validation uses, and the drift of its live inputs from its training data.

- goal: ROC-AUC, Brier score and calibration (expected calibration error over 10 equal-width
  bins of the predicted probability), and the achieved rate;
- spending: MAE of the forecast days that have an outcome, against the seasonal-naive forecast of
  the same days (the user's spend 7 days before, from the prediction's inputs), and their ratio;
- recommendation: the mean reward of the actions given, the share that followed the policy, and
  the policy's value by the replay estimate (the mean reward where the action given was the
  policy's: unbiased when the actions given were chosen uniformly at random, Li et al. 2011);
- segmentation: the share of each segment.

Every type: the PSI of the live inputs against the version's training profile (`trainers.drift`),
over the predictions that carried their inputs. Pure: it takes the pairs as values (no SQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np

from fcl.contract import model_types
from fcl.trainers import drift

CALIBRATION_BINS = 10
SEASON_DAYS = 7
# The live figure compared with the version's validated one (FCL_LIVE_DROP_<TYPE>), per model type:
# (live name, validated name); segmentation has no outcome to compare.
KEY: dict[str, tuple[str, str]] = {
    "goal": ("roc_auc", "roc_auc"),
    "spending": ("mae", "mae"),
    "recommendation": ("replay_value", "fqe_value"),
}

Pair = tuple[Any, Mapping[str, Any], Mapping[str, Any] | None]  # (inputs, prediction, outcome)


def figures(
    model_type: str,
    pairs: Sequence[Pair],
    *,
    profile: Mapping[str, Any] | None,
    validated: Mapping[str, Any],
    version: int,
) -> dict[str, Any]:
    """The live metrics, the key figure against its validated value, and the input drift."""
    joined = [(i, p, o) for i, p, o in pairs if o is not None]
    metrics = _METRICS[model_type](pairs if model_type == "segmentation" else joined)
    result: dict[str, Any] = {
        "metrics": metrics,
        "key": None,
        "input_drift": input_drift(model_type, pairs, profile, version),
    }
    if model_type in KEY:
        live_name, validated_name = KEY[model_type]
        live, before = metrics.get(live_name), validated.get(validated_name)
        spec = model_types.spec(model_type)
        higher = spec.higher_is_better if live_name == spec.key_metric else True
        result["key"] = {
            "metric": live_name,
            "live": live,
            "validated": before if isinstance(before, (int, float)) else None,
            "higher_is_better": higher,
            # how far live fell short of validated, relative (positive: worse than validated)
            "drop": _drop(live, before, higher),
        }
    return result


def compare(model_type: str, champion: Mapping[str, Any], challenger: Mapping[str, Any]) -> dict[str, Any] | None:
    """The champion's and the challenger's key figure over the same pairs (`figures` of each):
    which one did better, and by how much relative to the champion (positive: the challenger is
    better). None for a model type without one (segmentation)."""
    if model_type not in KEY:
        return None
    name = KEY[model_type][0]
    a, b = champion.get("metrics", {}).get(name), challenger.get("metrics", {}).get(name)
    higher = bool((champion.get("key") or {}).get("higher_is_better", True))
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        missing: dict[str, Any] = {"metric": name, "champion": a, "challenger": b, "higher_is_better": higher}
        return missing | {"gain": None, "better": None}
    gain = (b - a) if higher else (a - b)
    return {
        "metric": name,
        "champion": float(a),
        "challenger": float(b),
        "higher_is_better": higher,
        "gain": float(gain / abs(a)) if a else None,
        "better": "challenger" if gain > 0 else "champion" if gain < 0 else "neither",
    }


def _drop(live: float | None, validated: object, higher_is_better: bool) -> float | None:
    if live is None or not isinstance(validated, (int, float)) or validated == 0:
        return None
    change = (validated - live) if higher_is_better else (live - validated)
    return float(change / abs(validated))


def goal(joined: Sequence[Pair]) -> dict[str, Any]:
    p = np.array([float(pr["probability"]) for _, pr, o in joined if o and "achieved" in o], dtype=np.float64)
    y = np.array([bool(o["achieved"]) for _, _, o in joined if o and "achieved" in o], dtype=np.float64)
    if len(p) == 0:
        return {"pairs": 0, "roc_auc": None, "brier": None, "calibration_error": None, "achieved_rate": None}
    return {
        "pairs": len(p),
        "roc_auc": roc_auc(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "calibration_error": calibration_error(y, p),
        "achieved_rate": float(y.mean()),
    }


def roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """The Mann-Whitney form, ties counted half; None with one class only."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def calibration_error(y: np.ndarray, p: np.ndarray) -> float:
    """Expected calibration error: the count-weighted gap between the mean predicted probability
    and the observed rate, over CALIBRATION_BINS equal-width bins."""
    bins = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.sum() * abs(p[inside].mean() - y[inside].mean())
    return float(total / len(p))


def spending(joined: Sequence[Pair]) -> dict[str, Any]:
    errors, naive_errors = [], []
    for inputs, prediction, outcome in joined:
        if not outcome or "amounts" not in outcome:
            continue
        history = _days(inputs if isinstance(inputs, list) else [])
        forecast = _days(prediction.get("forecast") or [])
        for day, actual in _days(outcome["amounts"]).items():
            if day not in forecast:
                continue
            naive = history.get(day - timedelta(days=SEASON_DAYS))
            if naive is None:
                continue  # compared only where the baseline can be made: the same days for both
            errors.append(abs(forecast[day] - actual))
            naive_errors.append(abs(naive - actual))
    if not errors:
        return {"days": 0, "mae": None, "seasonal_naive_mae": None, "mae_ratio": None}
    mae, naive_mae = float(np.mean(errors)), float(np.mean(naive_errors))
    return {
        "days": len(errors),
        "mae": mae,
        "seasonal_naive_mae": naive_mae,
        "mae_ratio": mae / naive_mae if naive_mae > 0 else None,
    }


def _days(records: Sequence[Any]) -> dict[date, float]:
    found: dict[date, float] = {}
    for r in records:
        if isinstance(r, Mapping) and isinstance(r.get("date"), str) and isinstance(r.get("amount"), (int, float)):
            try:
                found[date.fromisoformat(r["date"])] = float(r["amount"])
            except ValueError:
                continue
    return found


def recommendation(joined: Sequence[Pair]) -> dict[str, Any]:
    given = [(int(p["action"]), int(o["action"]), float(o["reward"])) for _, p, o in joined if o and "reward" in o]
    if not given:
        return {"pairs": 0, "mean_reward": None, "followed_share": None, "replay_value": None, "followed": 0}
    followed = [r for policy, action, r in given if policy == action]
    return {
        "pairs": len(given),
        "mean_reward": float(np.mean([r for _, _, r in given])),
        "followed_share": len(followed) / len(given),
        "followed": len(followed),
        "replay_value": float(np.mean(followed)) if followed else None,
    }


def segmentation(pairs: Sequence[Pair]) -> dict[str, Any]:
    segments = [int(p["segment"]) for _, p, _ in pairs if "segment" in p]
    if not segments:
        return {"predictions": 0, "segment_shares": {}}
    values, counts = np.unique(segments, return_counts=True)
    return {
        "predictions": len(segments),
        "segment_shares": {str(v): float(c / len(segments)) for v, c in zip(values, counts, strict=True)},
    }


_METRICS = {"goal": goal, "spending": spending, "recommendation": recommendation, "segmentation": segmentation}


def input_columns(model_type: str, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
    """The live inputs as the columns the training profile has (trainers' `data_columns`)."""
    columns: dict[str, list[float]] = {}
    for record in inputs:
        for r in record if isinstance(record, list) else [record]:
            if not isinstance(r, Mapping):
                continue
            if model_type in ("goal", "segmentation") and isinstance(r.get("features"), Mapping):
                for name, value in r["features"].items():
                    columns.setdefault(name, []).append(float(value))
            elif model_type == "spending" and isinstance(r.get("amount"), (int, float)):
                columns.setdefault("amount", []).append(float(r["amount"]))
            elif model_type == "recommendation" and isinstance(r.get("state"), list):
                for i, value in enumerate(r["state"]):
                    columns.setdefault(f"state_{i}", []).append(float(value))
    return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}


def input_drift(
    model_type: str, pairs: Sequence[Pair], profile: Mapping[str, Any] | None, version: int
) -> dict[str, Any] | None:
    """The PSI of the live inputs against the version's training profile; None without inputs or
    a profile."""
    inputs = [i for i, _, _ in pairs if i is not None]
    if not inputs or not profile:
        return None
    columns = input_columns(model_type, inputs)
    if not columns:
        return None
    try:
        measured = drift.drift(columns, None, dict(profile), reference_version=version)
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # a profile it cannot read: no drift figure, the rest stands
    return {
        "inputs": len(inputs),
        "psi": measured["psi"],
        "psi_max": measured["psi_max"],
        "level": measured["level"],
        "features_only_in_training": measured["features_only_in_champion"],
        "features_only_live": measured["features_only_in_candidate"],
    }
