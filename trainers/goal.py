"""`goal`: will the user reach this savings goal? A Random Forest, judged against a prior-only
dummy and a logistic regression on a holdout grouped by user (no user's goals on both sides).

The holdout is chosen by a stable hash of the user id, not by the seed: the champion was trained
with the same rule, so it has never seen the holdout's users either and the comparison is fair.
Stratification by outcome holds in expectation; the positive rate of each side is recorded, and a
holdout with one outcome only is refused."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contract.enums import CheckKind
from trainers.artifacts import ArtifactError, load_skops_artifact, skops_artifact
from trainers.base import (
    Artifact,
    Evaluation,
    Fitted,
    InvalidDataError,
    Trainer,
    TrainRequest,
    feature_difference,
    require,
    stable_bucket,
)
from trainers.gates import HIGHER, LOWER, Check, Gate
from trainers.tabular import feature_matrix

TRUSTED = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
    "builtins.float",
]


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(x)[:, 1]


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "accuracy": float(accuracy_score(y, p >= 0.5)),
    }


class GoalTrainer(Trainer):
    model_type: ClassVar[str] = "goal"
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 300,
        "min_samples_leaf": 3,
        "max_features": "sqrt",
        "holdout_folds": 5,
        "n_jobs": -1,
    }
    gate: ClassVar[Gate] = Gate(
        (
            Check("roc_auc", HIGHER, 0.6),
            Check("brier_skill", HIGHER, 0.0),  # better than always predicting the base rate
            Check("roc_auc_gain_over_logreg", HIGHER, -0.01),
            Check("roc_auc", HIGHER, -0.01, kind=CheckKind.CHANGE),
            Check("brier", LOWER, 0.05, kind=CheckKind.CHANGE),
        )
    )

    def _split(
        self, samples: Sequence[dict[str, Any]], hp: dict[str, Any], names: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
        """Features, outcomes, feature names, and the training and holdout rows (by user hash)."""
        require(samples, 50, "goal")
        x, names = feature_matrix(samples, names)
        y = np.array([bool(s["achieved"]) for s in samples], dtype=int)
        groups = np.array([s["user_id"] for s in samples])
        if y.min() == y.max():
            raise InvalidDataError("goal: every goal has the same outcome; nothing to learn")
        in_holdout = np.array([stable_bucket(g, int(hp["holdout_folds"])) == 0 for g in groups])
        train_idx, test_idx = np.flatnonzero(~in_holdout), np.flatnonzero(in_holdout)
        if len(train_idx) == 0 or y[train_idx].min() == y[train_idx].max() or y[test_idx].min() == y[test_idx].max():
            raise InvalidDataError("goal: the training or holdout side holds one outcome only; more data needed")
        return x, y, names, train_idx, test_idx

    def fit(self, request: TrainRequest) -> Fitted:
        hp = self.hyperparameters(request.hyperparameters)
        x, y, names, train_idx, test_idx = self._split(request.samples, hp)
        request.progress(0.1)
        started = time.perf_counter()
        forest = RandomForestClassifier(
            n_estimators=int(hp["n_estimators"]),
            min_samples_leaf=int(hp["min_samples_leaf"]),
            max_features=hp["max_features"],
            n_jobs=int(hp["n_jobs"]),
            random_state=request.seed,
        )
        forest.fit(x[train_idx], y[train_idx])
        request.progress(0.7)
        return Fitted(
            model={"model": forest, "features": names},
            hyperparameters=hp,
            info={
                "train_size": len(train_idx),
                "holdout_size": len(test_idx),
                "features": names,
                "positive_rate_train": float(y[train_idx].mean()),
                "positive_rate_holdout": float(y[test_idx].mean()),
                "fit_seconds": time.perf_counter() - started,
            },
        )

    def evaluate(self, model: Any, request: TrainRequest) -> Evaluation:
        hp = self.hyperparameters(request.hyperparameters)
        x, y, names, train_idx, test_idx = self._split(request.samples, hp, model["features"])
        y_test = y[test_idx]
        metrics = classification_metrics(y_test, scores(model["model"], x[test_idx]))
        prior = DummyClassifier(strategy="prior").fit(x[train_idx], y[train_idx])
        logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train_idx], y[train_idx])
        prior_brier = float(brier_score_loss(y_test, scores(prior, x[test_idx])))
        logreg_metrics = classification_metrics(y_test, scores(logreg, x[test_idx]))
        metrics |= {
            "prior_brier": prior_brier,
            "brier_skill": 1.0 - metrics["brier"] / prior_brier if prior_brier > 0 else 0.0,
            "logreg_roc_auc": logreg_metrics["roc_auc"],
            "logreg_brier": logreg_metrics["brier"],
            "roc_auc_gain_over_logreg": metrics["roc_auc"] - logreg_metrics["roc_auc"],
        }
        request.progress(0.9)
        baseline, incomparable = None, None
        if request.champion is not None:
            baseline = {}
            champion = self.load(request.champion)
            incomparable = feature_difference(champion["features"], names)
            if incomparable is None:
                baseline = classification_metrics(y_test, scores(champion["model"], x[test_idx]))
        request.progress(1.0)
        return Evaluation(model=model, metrics=metrics, baseline_metrics=baseline, incomparable=incomparable)

    def artifact(self, model: Any) -> Artifact:
        return skops_artifact(model)

    def load(self, artifact: Artifact) -> Any:
        model = load_skops_artifact(artifact, TRUSTED)
        if not isinstance(model, dict) or not isinstance(model.get("model"), RandomForestClassifier):
            raise ArtifactError("not a goal model artifact")
        return model
