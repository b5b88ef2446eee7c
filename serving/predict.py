"""Predictions from a model fcl trained, for every model type, from the contract's sample records
without their outcome fields. The feature order, the scaling, the lookback and the action count
come from the artifact, never from the caller; records are checked with the limits and field rules
that ingestion applies, and a refusal names the record and the rule.

    model = load_model(Path("goal-v7.skops"))      # or the bytes, or ChampionWatcher.predict
    model.predict([{"user_id": "u1", "goal_id": "g1", "features": {...}}])
    # goal:           [{"probability": 0.83}]
    # segmentation:   [{"segment": 2, "distance": 0.41}]
    # spending:       one per user, in order of first appearance:
    #                 [{"user_id": "u1", "forecast": [{"date": "2026-12-05", "amount": 61.2}, ...]}]
    # recommendation: [{"action": 3, "q_values": [...]}]  (an optional `mask`: the allowed actions)

Each record's answer depends on that record alone (a spending forecast on its user's records
alone): a batch of one and a batch of a thousand give the same answers.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import TypeAdapter, ValidationError

from fcl.contract import limits, model_types
from fcl.contract.artifacts import Artifact

MAX_PREDICT_RECORDS = 100_000  # records in one call
HORIZON = 7  # spending: days forecast by default
MAX_HORIZON = model_types.MAX_HORIZON


class InvalidRecords(ValueError):
    """Records refused before any prediction; the message names the record and the rule."""


INPUTS = model_types.input_shapes()
_ADAPTERS: dict[str, TypeAdapter[list[Any]]] = {
    name: TypeAdapter(list[shape])  # type: ignore[valid-type]
    for name, shape in INPUTS.items()
}


def check_records(model_type: str, records: object) -> list[Any]:
    """The records as the model type's input shapes, or InvalidRecords naming the first problems
    (`records.3.features.x: ...`)."""
    if not isinstance(records, (list, tuple)):
        raise InvalidRecords(f"records: a list of {model_type} records is expected, not {type(records).__name__}")
    if not records:
        raise InvalidRecords("records: no record")
    if len(records) > MAX_PREDICT_RECORDS:
        raise InvalidRecords(f"records: {len(records)} records exceed MAX_PREDICT_RECORDS ({MAX_PREDICT_RECORDS})")
    try:
        limits.check_document(list(records))
    except limits.LimitExceeded as exc:
        raise InvalidRecords(limits.clip(f"records.{exc}" if str(exc)[:1].isdigit() else str(exc))) from None
    try:
        return list(_ADAPTERS[model_type].validate_python(list(records)))
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in ('records', *err['loc']))}: {err['msg']}" for err in exc.errors()[:3]]
        more = exc.error_count() - 3
        raise InvalidRecords(
            limits.clip("; ".join(parts) + (f" (and {more} more)" if more > 0 else "") + f" (a {model_type} record)")
        ) from None


def _features(records: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    expected = set(names)
    x = np.empty((len(records), len(names)), dtype=np.float64)
    for i, r in enumerate(records):
        if set(r.features) != expected:
            missing, extra = sorted(expected - set(r.features)), sorted(set(r.features) - expected)
            raise InvalidRecords(
                f"records.{i}.features: the model was trained on {len(names)} features; missing {missing[:10]}, "
                f"unexpected {extra[:10]}"
            )
        x[i] = [r.features[n] for n in names]
    return x


# -- the predictors ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictor:
    """A loaded model and what answers for it; `predict` checks the records first."""

    model: Any
    model_type: ClassVar[str]

    def predict(self, records: object, **options: Any) -> list[dict[str, Any]]:
        return self._predict(check_records(self.model_type, records), **options)

    def _predict(self, records: list[Any], **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError


class GoalPredictor(Predictor):
    model_type = "goal"

    def _predict(self, records: list[Any], **options: Any) -> list[dict[str, Any]]:
        from fcl.trainers.goal import scores

        p = scores(self.model, _features(records, self.model["features"]))
        return [{"probability": float(v)} for v in p]


class SegmentationPredictor(Predictor):
    model_type = "segmentation"

    def _predict(self, records: list[Any], **options: Any) -> list[dict[str, Any]]:
        pipeline = self.model["pipeline"]
        x = _features(records, self.model["features"])
        *steps, (_, kmeans) = pipeline.steps
        z = x
        for _, step in steps:
            z = step.transform(z)
        distances = kmeans.transform(z)  # to every centre, in the space the centres live in
        nearest = distances.argmin(axis=1)
        segment_ids = np.asarray(self.model["segment_ids"])
        return [{"segment": int(segment_ids[k]), "distance": float(distances[i, k])} for i, k in enumerate(nearest)]


class RecommendationPredictor(Predictor):
    model_type = "recommendation"

    def _predict(self, records: list[Any], **options: Any) -> list[dict[str, Any]]:
        import torch

        state_dim, n_actions = int(self.model.config["state_dim"]), int(self.model.config["n_actions"])
        for i, r in enumerate(records):
            if len(r.state) != state_dim:
                raise InvalidRecords(f"records.{i}.state: {len(r.state)} values, the model takes {state_dim}")
            if r.mask is not None and len(r.mask) != n_actions:
                raise InvalidRecords(f"records.{i}.mask: {len(r.mask)} entries, the model has {n_actions} actions")
        net = self.model.net
        device = next(net.parameters()).device
        states = torch.as_tensor([r.state for r in records], dtype=torch.float32, device=device)
        with torch.no_grad():
            q = net(states).cpu().numpy().astype(np.float64)
        allowed = np.array([r.mask if r.mask is not None else [True] * n_actions for r in records], dtype=bool)
        masked = np.where(allowed, q, -np.inf)
        actions = masked.argmax(axis=1)
        return [
            {"action": int(a), "q_values": [float(v) if ok else None for v, ok in zip(q[i], allowed[i], strict=True)]}
            for i, a in enumerate(actions)
        ]


class SpendingPredictor(Predictor):
    model_type = "spending"

    def _predict(self, records: list[Any], **options: Any) -> list[dict[str, Any]]:
        import torch

        from fcl.trainers.spending import calendar

        horizon = options.get("horizon", HORIZON)
        if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_HORIZON:
            raise InvalidRecords(f"horizon: {horizon!r} is not a whole number of days from 1 to {MAX_HORIZON}")
        lookback = int(self.model.config["lookback"])
        by_user: dict[str, dict[date, float]] = {}
        for i, r in enumerate(records):
            if r.amount < 0:
                raise InvalidRecords(f"records.{i}.amount: {r.amount} is not a spend")
            by_user.setdefault(r.user_id, {})[date.fromisoformat(r.date)] = float(r.amount)
        windows, levels, lasts = [], [], []
        for user, days in by_user.items():
            first, last = min(days), max(days)
            span = (last - first).days + 1
            if span < lookback:
                raise InvalidRecords(
                    f"records of user {user!r}: {span} days of history, the model looks back {lookback} days"
                )
            history = [first + timedelta(days=k) for k in range(span)]
            logs = np.log1p(np.array([days.get(d, 0.0) for d in history], dtype=np.float64))
            levels.append(float(logs.mean()))  # the user's own level, as in training
            windows.append(logs[-lookback:] - levels[-1])
            lasts.append(last)
        net = self.model.net
        device = next(net.parameters()).device
        net.eval()
        # every user's window steps forward together: one pass of the network per forecast day
        norm = np.array(windows, dtype=np.float32)  # users x lookback
        steps = np.empty((len(lasts), horizon), dtype=np.float64)
        for h in range(horizon):
            # inputs[:, t] = (spend of day t, calendar of day t + 1), as in training
            following = np.stack(
                [calendar([last + timedelta(days=h + 2 - lookback + k) for k in range(lookback)]) for last in lasts]
            )
            x = np.concatenate([norm[:, :, None], following], axis=2)
            with torch.no_grad():
                predicted = net(torch.from_numpy(np.ascontiguousarray(x)).to(device))[:, -1].cpu().numpy()
            steps[:, h] = predicted
            norm = np.concatenate([norm[:, 1:], predicted[:, None].astype(np.float32)], axis=1)
        return [
            {
                "user_id": user,
                "forecast": [
                    {
                        "date": (last + timedelta(days=h + 1)).isoformat(),
                        "amount": round(max(0.0, math.expm1(float(steps[u, h]) + level)), 6),
                    }
                    for h in range(horizon)
                ],
            }
            for u, (user, last, level) in enumerate(zip(by_user, lasts, levels, strict=True))
        ]


PREDICTORS: dict[str, type[Predictor]] = {
    p.model_type: p for p in (GoalPredictor, SegmentationPredictor, SpendingPredictor, RecommendationPredictor)
}


def predictor(model_type: str, model: Any) -> Predictor:
    """The predictor of a model the model type's trainer loaded."""
    model_types.spec(model_type)  # KeyError naming the known types
    return PREDICTORS[model_type](model)


def load_model(source: Path | str | bytes, model_type: str | None = None) -> Predictor:
    """A predictor from an artifact (a path or its bytes), loaded with the trainer's safe loader
    (skops with its trusted types, or safetensors; never pickle). Without `model_type`, the
    artifact says which it is."""
    from fcl.trainers.formats import ArtifactError
    from fcl.trainers.registry import get_trainer

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    fmt = "skops" if zipfile.is_zipfile(io.BytesIO(data)) else "safetensors"
    candidates = [model_type] if model_type else [n for n in PREDICTORS if _format_of(n) == fmt]
    problems = []
    for name in candidates:
        try:
            return predictor(name, get_trainer(name).load(Artifact(data=data, format=fmt)))
        except (ArtifactError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{name}: {exc}")
    raise ArtifactError("not a model fcl can load: " + "; ".join(problems))


def _format_of(model_type: str) -> str:
    return "safetensors" if model_type in ("spending", "recommendation") else "skops"
