"""`segmentation`: users into behavioural segments. StandardScaler + K-means (n_init >= 10), k chosen
by silhouette over a range (on a sample when there are many users); Calinski-Harabasz,
Davies-Bouldin and the smallest segment's share reported; stability against the champion as the
adjusted Rand index of their assignments of the same users; segment ids aligned to the champion's
by Hungarian matching, so a segment keeps its id across retrains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fcl.contract.enums import CheckKind
from fcl.trainers.base import (
    Artifact,
    DataColumns,
    Evaluation,
    Fitted,
    InvalidDataError,
    Trainer,
    TrainRequest,
    feature_difference,
    require,
)
from fcl.trainers.formats import ArtifactError, load_skops_artifact, skops_artifact
from fcl.trainers.gates import HIGHER, LOWER, Check, Gate
from fcl.trainers.tabular import feature_matrix

TRUSTED = [
    "sklearn.cluster._kmeans.KMeans",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.pipeline.Pipeline",
    "numpy.dtype",
    "builtins.float",
]


def latest_per_user(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per user: the latest sample wins (samples arrive in time order)."""
    by_user: dict[str, dict[str, Any]] = {}
    for s in samples:
        by_user[s["user_id"]] = s
    return list(by_user.values())


def align(labels: np.ndarray, reference: np.ndarray, k: int, reference_ids: int) -> np.ndarray:
    """A mapping cluster -> segment id that agrees with `reference` as much as possible (Hungarian
    matching on the contingency table); clusters left over get new ids after the reference's."""
    table = np.zeros((k, reference_ids), dtype=np.int64)
    np.add.at(table, (labels, reference), 1)
    rows, cols = linear_sum_assignment(-table)
    mapping = np.full(k, -1, dtype=np.int64)
    mapping[rows] = cols
    next_id = reference_ids
    for c in range(k):
        if mapping[c] < 0:
            mapping[c] = next_id
            next_id += 1
    return mapping


@dataclass(frozen=True)
class _FitByProduct:
    """What a fit computed that the evaluation of the same model on the same samples reuses."""

    pipeline: Pipeline
    samples: Sequence[dict[str, Any]]
    z: np.ndarray
    labels: np.ndarray
    silhouette: float


class SegmentationTrainer(Trainer):
    _fitted: _FitByProduct | None = None  # the last fit's by-products, until its evaluation
    model_type: ClassVar[str] = "segmentation"
    defaults: ClassVar[dict[str, Any]] = {
        "k_min": 2,
        "k_max": 8,
        "n_init": 10,
        "silhouette_sample": 5000,
        "max_iter": 300,
    }
    gate: ClassVar[Gate] = Gate(
        (
            Check("silhouette", HIGHER, 0.15),
            Check("smallest_segment_share", HIGHER, 0.01),
            Check("stability_ari", HIGHER, 0.5, needs_champion=True),
            Check("silhouette", HIGHER, -0.05, kind=CheckKind.CHANGE),
            Check("davies_bouldin", LOWER, 0.10, kind=CheckKind.CHANGE),
        )
    )

    def fit(self, request: TrainRequest) -> Fitted:
        hp = self.hyperparameters(request.hyperparameters)
        if int(hp["n_init"]) < 10:
            raise InvalidDataError("segmentation: n_init must be at least 10")
        rows = latest_per_user(list(request.samples))
        require(rows, max(20, int(hp["k_max"]) * 5), "segmentation (distinct users)")
        x, names = feature_matrix(rows)
        sample = self._silhouette_sample(len(x), hp, request.seed)
        scaler = StandardScaler().fit(x)
        z = scaler.transform(x)
        ks = list(range(int(hp["k_min"]), int(hp["k_max"]) + 1))
        best: tuple[float, int, KMeans] | None = None
        silhouettes = {}
        for i, k in enumerate(ks):
            km = KMeans(
                n_clusters=k, n_init=int(hp["n_init"]), max_iter=int(hp["max_iter"]), random_state=request.seed
            ).fit(z)
            score = float(silhouette_score(z[sample], km.labels_[sample]))
            silhouettes[k] = score
            if best is None or score > best[0]:
                best = (score, k, km)
            request.progress(0.9 * (i + 1) / len(ks))
        assert best is not None
        score, k, km = best
        pipeline = Pipeline([("scale", scaler), ("kmeans", km)])
        model = {"pipeline": pipeline, "features": names, "segment_ids": list(range(k))}
        # What the evaluation of this very model on these very samples would compute again: the
        # scaled rows, each user's segment (K-means' final assignment is its prediction) and the
        # silhouette on the same sample.
        self._fitted = _FitByProduct(pipeline, request.samples, z, km.labels_, score)
        return Fitted(
            model=model,
            hyperparameters=hp,
            info={"users": len(rows), "features": names, "silhouette_by_k": silhouettes},
        )

    @staticmethod
    def _silhouette_sample(n: int, hp: dict[str, Any], seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.choice(n, size=min(n, int(hp["silhouette_sample"])), replace=False)

    def evaluate(self, model: Any, request: TrainRequest) -> Evaluation:
        hp = self.hyperparameters(request.hyperparameters)
        rows = latest_per_user(list(request.samples))
        x, names = feature_matrix(rows, model["features"])
        sample = self._silhouette_sample(len(x), hp, request.seed)
        pipeline = model["pipeline"]
        fitted = self._fitted
        if fitted is not None and fitted.pipeline is pipeline and fitted.samples is request.samples:
            z, labels, silhouette = fitted.z, fitted.labels, fitted.silhouette  # the fit's, not again
            self._fitted = None
        else:  # a candidate judged again from its artifact, or a model fitted elsewhere
            z = pipeline.named_steps["scale"].transform(x)
            labels, silhouette = pipeline.named_steps["kmeans"].predict(z), None
        k = int(pipeline.named_steps["kmeans"].n_clusters)
        metrics = self._quality(z, labels, sample, silhouette) | {"k": float(k)}
        mapping = np.arange(k)
        baseline, incomparable = None, None
        if request.champion is not None:
            baseline = {}
            champion = self.load(request.champion)
            incomparable = feature_difference(champion["features"], names)
            if incomparable is None:
                champion_raw = champion["pipeline"].predict(x)
                champion_labels = np.asarray(champion["segment_ids"])[champion_raw]
                reference_ids = int(max(champion["segment_ids"])) + 1
                mapping = align(labels, champion_labels, k, reference_ids)
                metrics["stability_ari"] = float(adjusted_rand_score(champion_labels, labels))
                baseline = self._quality(z, champion_raw, sample) | {"k": float(len(champion["segment_ids"]))}
        request.progress(1.0)
        return Evaluation(
            model={**model, "segment_ids": [int(m) for m in mapping]},
            metrics=metrics,
            baseline_metrics=baseline,
            incomparable=incomparable,
        )

    def data_columns(self, samples: Sequence[dict[str, Any]]) -> DataColumns:
        x, names = feature_matrix(latest_per_user(list(samples)))  # the rows the model is fitted on
        return {n: x[:, i] for i, n in enumerate(names)}, None

    def artifact(self, model: Any) -> Artifact:
        return skops_artifact(model)

    @staticmethod
    def _quality(
        z: np.ndarray, labels: np.ndarray, sample: np.ndarray, silhouette: float | None = None
    ) -> dict[str, float]:
        counts = np.bincount(labels)
        counts = counts[counts > 0]
        if len(counts) < 2:
            return {"smallest_segment_share": 1.0}
        if silhouette is None:
            silhouette = (
                float(silhouette_score(z[sample], labels[sample])) if len(set(labels[sample])) > 1 else float("nan")
            )
        return {
            "silhouette": silhouette,
            "calinski_harabasz": float(calinski_harabasz_score(z, labels)),
            "davies_bouldin": float(davies_bouldin_score(z, labels)),
            "smallest_segment_share": float(counts.min() / counts.sum()),
        }

    def load(self, artifact: Artifact) -> Any:
        model = load_skops_artifact(artifact, TRUSTED)
        if not isinstance(model, dict) or not isinstance(model.get("pipeline"), Pipeline):
            raise ArtifactError("not a segmentation model artifact")
        return model

    @staticmethod
    def assign(model: dict[str, Any], samples: list[dict[str, Any]]) -> np.ndarray:
        """Segment ids (aligned across versions) for samples."""
        x, _ = feature_matrix(samples, model["features"])
        return np.asarray(model["segment_ids"])[model["pipeline"].predict(x)]
