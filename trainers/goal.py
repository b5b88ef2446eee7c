"""`goal`: will the user reach this savings goal? The best honest candidate of a small family of
classifiers, judged against a prior-only dummy and a logistic regression on a holdout grouped by
user (no user's goals on both sides).

The holdout is chosen by a stable hash of the user id, not by the seed: the champion was trained
with the same rule, so it has never seen the holdout's users either and the comparison is fair.
Stratification by outcome holds in expectation; the positive rate of each side is recorded, and a
holdout with one outcome only is refused.

The family (`FAMILIES`: a Random Forest, the seed's model and the default; histogram gradient
boosting; an L2 logistic regression on scaled features) is chosen by user-grouped
cross-validation on the TRAINING users only, by mean ROC-AUC and the one-standard-error rule: the
simplest family (`SIMPLICITY`: the logistic regression, then the forest, then boosting) whose mean
is within one standard error of the best family's fold scores wins. Without it a boosted model that
beat the logistic regression by 0.0001 in the folds, by the luck of its early-stopping split, won
the search and then lost to the logistic baseline on the holdout by 0.03 (3 seeds in 30 on the
simulator's goals), and the gate refused a first version. The held-out users are never looked at
until the gate. In the cross-validation the forest grows
`cv_forest_estimators` trees (50: on the simulator's goals its cross-validated ROC-AUC moved by
less than 0.001 from 50 to 300 trees), which keeps the whole search within twice the time of the
forest alone (bench/bench_goal.py). The chosen family's out-of-fold probabilities then
decide calibration: a sigmoid (Platt) and an isotonic map are each cross-fitted on them (fitted on
the other folds, applied to each fold), and the better one is kept when it lowers the Brier score
of the uncalibrated probabilities; the map kept is then fitted on every out-of-fold probability,
as scikit-learn's `CalibratedClassifierCV(ensemble=False)` does."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
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
    stable_bucket,
)
from fcl.trainers.formats import ArtifactError, load_skops_artifact, skops_artifact
from fcl.trainers.gates import HIGHER, LOWER, Check, Gate
from fcl.trainers.tabular import feature_matrix

# A family: (hyperparameters, seed, cross-validating?) -> an unfitted classifier with predict_proba.
# Adding a family is one line here (and its types in TRUSTED, which a test checks).
Family = Callable[[dict[str, Any], int, bool], Any]
FAMILIES: dict[str, Family] = {
    "random_forest": lambda hp, seed, cv: RandomForestClassifier(
        n_estimators=min(int(hp["n_estimators"]), int(hp["cv_forest_estimators"])) if cv else int(hp["n_estimators"]),
        min_samples_leaf=int(hp["min_samples_leaf"]),
        max_features=hp["max_features"],
        n_jobs=int(hp["n_jobs"]),
        random_state=seed,
    ),
    "hist_gradient_boosting": lambda hp, seed, cv: HistGradientBoostingClassifier(
        max_iter=int(hp["hgb_max_iter"]),
        learning_rate=float(hp["hgb_learning_rate"]),
        min_samples_leaf=int(hp["hgb_min_samples_leaf"]),
        early_stopping=True,  # on a 10 % split drawn from the seed: the same data and seed, the same model
        random_state=seed,
    ),
    "logistic_regression": lambda hp, seed, cv: make_pipeline(
        StandardScaler(), LogisticRegression(C=float(hp["logreg_c"]), max_iter=2000)
    ),
}
# The order of the one-standard-error rule: a family later here must beat every earlier one by more
# than the noise of the folds to be chosen.
SIMPLICITY = ("logistic_regression", "random_forest", "hist_gradient_boosting")
MODEL_CLASSES = (RandomForestClassifier, HistGradientBoostingClassifier, Pipeline)

TRUSTED = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.preprocessing._label.LabelEncoder",
    "numpy.random._generator.Generator",
    "numpy.random._pcg64.PCG64",
    "numpy.uint64",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "numpy.dtype",
    "builtins.float",
]
CALIBRATIONS = ("sigmoid", "isotonic")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def fit_calibration(method: str, p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A map from raw to calibrated probabilities, as plain numbers (nothing to trust when loaded)."""
    if method == "sigmoid":  # Platt scaling on the log-odds
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
        return {"method": "sigmoid", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return {
        "method": "isotonic",
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


def calibrate(calibration: dict[str, Any] | None, p: np.ndarray) -> np.ndarray:
    if not calibration:
        return p
    if calibration["method"] == "sigmoid":
        z = float(calibration["a"]) * _logit(p) + float(calibration["b"])
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))
    return np.interp(p, np.asarray(calibration["x"], dtype=float), np.asarray(calibration["y"], dtype=float))


def scores(model: Any, x: np.ndarray) -> np.ndarray:
    """Probabilities of achieving the goal: a bare classifier, or a goal model (its dict)."""
    if isinstance(model, dict):
        return calibrate(model.get("calibration"), model["model"].predict_proba(x)[:, 1])
    return np.asarray(model.predict_proba(x)[:, 1])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """The reliability curve's expected calibration error: over `bins` equal-width bins of predicted
    probability, the share of rows in a bin times |observed rate - mean prediction| there."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    observed = np.bincount(which, weights=y, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    return float(np.abs(observed - predicted).sum() / len(p))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "accuracy": float(accuracy_score(y, p >= 0.5)),
        "ece": expected_calibration_error(y, p),
    }


def cross_fitted_brier(method: str, p: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    """Brier of `method`'s calibration of out-of-fold probabilities, each fold mapped by a map fitted
    on the other folds: what calibrating would do to users it was not fitted on."""
    out = np.empty_like(p)
    for k in np.unique(folds):
        rest = folds != k
        if y[rest].min() == y[rest].max():
            return float("inf")
        out[~rest] = calibrate(fit_calibration(method, p[rest], y[rest]), p[~rest])
    return float(brier_score_loss(y, out))


def oof_probabilities(
    family: Family, hp: dict[str, Any], seed: int, x: np.ndarray, y: np.ndarray, folds: np.ndarray
) -> np.ndarray | None:
    """Out-of-fold probabilities of one family; None when a fold's training side has one outcome."""
    p = np.empty(len(y), dtype=np.float64)
    for k in np.unique(folds):
        rest = folds != k
        if y[rest].min() == y[rest].max():
            return None
        p[~rest] = scores(family(hp, seed, True).fit(x[rest], y[rest]), x[~rest])
    return p


def fold_roc_aucs(y: np.ndarray, p: np.ndarray, folds: np.ndarray) -> list[float]:
    """ROC-AUC of each fold that holds both outcomes."""
    return [
        float(roc_auc_score(y[folds == k], p[folds == k])) for k in np.unique(folds) if len(set(y[folds == k])) == 2
    ]


def one_standard_error_choice(fold_scores: dict[str, list[float]]) -> str | None:
    """The simplest family (SIMPLICITY's order) whose mean fold score is within one standard error
    of the best mean: the best family's fold scores' standard deviation over the square root of
    their count (Hastie, Tibshirani and Friedman, The Elements of Statistical Learning, 7.10).
    None when no family has a score."""
    means = {n: float(np.mean(v)) for n, v in fold_scores.items() if v and np.isfinite(np.mean(v))}
    if not means:
        return None
    best = max(means, key=lambda n: means[n])
    scores = fold_scores[best]
    se = float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0
    within = [n for n in means if means[n] >= means[best] - se]
    return min(within, key=lambda n: (SIMPLICITY.index(n), -means[n]))


class GoalTrainer(Trainer):
    model_type: ClassVar[str] = "goal"
    defaults: ClassVar[dict[str, Any]] = {
        "families": list(FAMILIES),  # the candidates of the search, the default (the forest) first
        "cv_folds": 3,
        "calibration": "auto",  # "auto": calibrate when the inner cross-validation says it helps; "none"
        "n_estimators": 300,
        "cv_forest_estimators": 50,
        "min_samples_leaf": 3,
        "max_features": "sqrt",
        "hgb_max_iter": 300,
        "hgb_learning_rate": 0.1,
        "hgb_min_samples_leaf": 20,
        "logreg_c": 1.0,
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

    def hyperparameters(self, overrides: dict[str, Any]) -> dict[str, Any]:
        hp = super().hyperparameters(overrides)
        families = hp["families"]
        if isinstance(families, str):
            families = hp["families"] = [families]
        if not isinstance(families, list) or not families or any(f not in FAMILIES for f in families):
            raise InvalidDataError(f"goal: families must be a non-empty list of {sorted(FAMILIES)}, got {families!r}")
        if hp["calibration"] not in ("auto", "none"):
            raise InvalidDataError(f"goal: calibration must be 'auto' or 'none', got {hp['calibration']!r}")
        if not isinstance(hp["cv_folds"], int) or hp["cv_folds"] < 2:
            raise InvalidDataError(f"goal: cv_folds must be an integer of at least 2, got {hp['cv_folds']!r}")
        return hp

    def _split(
        self, samples: Sequence[dict[str, Any]], hp: dict[str, Any], names: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Features, outcomes, feature names, the training and holdout rows (by user hash), users."""
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
        return x, y, names, train_idx, test_idx, groups

    def select(
        self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, hp: dict[str, Any], seed: int, progress: Any
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
        """The family and calibration to fit on every training row, and what decided them."""
        names: list[str] = hp["families"]
        info: dict[str, Any] = {"families": names, "cv_folds": int(hp["cv_folds"])}
        single = len(names) == 1 and hp["calibration"] == "none"
        if single or len(np.unique(groups)) < int(hp["cv_folds"]):
            info["selection"] = "only family" if single else "default: fewer training users than folds"
            return names[0], None, info
        folds = np.empty(len(y), dtype=np.int64)
        for k, (_, test) in enumerate(GroupKFold(n_splits=int(hp["cv_folds"])).split(x, y, groups)):
            folds[test] = k
        oof: dict[str, np.ndarray] = {}
        cv_roc_auc: dict[str, float] = {}
        fold_scores: dict[str, list[float]] = {}
        cv_seconds: dict[str, float] = {}
        for i, name in enumerate(names):
            started = time.perf_counter()
            p = oof_probabilities(FAMILIES[name], hp, seed, x, y, folds)
            cv_seconds[name] = time.perf_counter() - started
            if p is not None:
                oof[name], fold_scores[name] = p, fold_roc_aucs(y, p, folds)
                cv_roc_auc[name] = float(np.mean(fold_scores[name])) if fold_scores[name] else float("nan")
            progress(0.1 + 0.45 * (i + 1) / len(names))
        info |= {"cv_roc_auc": cv_roc_auc, "cv_seconds": cv_seconds}
        chosen = one_standard_error_choice(fold_scores)
        if chosen is None:
            info["selection"] = "default: no fold split the outcomes"
            return names[0], None, info
        best = chosen
        info["selection"] = "cross-validated roc_auc, one standard error"
        calibration = None
        if hp["calibration"] == "auto":
            p = oof[best]
            raw = float(brier_score_loss(y, p))
            briers = {m: cross_fitted_brier(m, p, y, folds) for m in CALIBRATIONS}
            method = min(CALIBRATIONS, key=lambda m: briers[m])
            info |= {"cv_brier_uncalibrated": raw, "cv_brier_calibrated": briers}
            if briers[method] < raw:
                calibration = fit_calibration(method, p, y)
        return best, calibration, info

    def fit(self, request: TrainRequest) -> Fitted:
        hp = self.hyperparameters(request.hyperparameters)
        x, y, names, train_idx, test_idx, groups = self._split(request.samples, hp)
        request.progress(0.1)
        started = time.perf_counter()
        xt, yt = x[train_idx], y[train_idx]
        family, calibration, selection = self.select(xt, yt, groups[train_idx], hp, request.seed, request.progress)
        search_seconds = time.perf_counter() - started
        estimator = FAMILIES[family](hp, request.seed, False).fit(xt, yt)
        request.progress(0.7)
        metrics = {f"cv_roc_auc_{n}": v for n, v in selection.get("cv_roc_auc", {}).items()}
        return Fitted(
            model={"model": estimator, "features": names, "family": family, "calibration": calibration},
            hyperparameters=hp,
            metrics=metrics,
            info={
                "train_size": len(train_idx),
                "holdout_size": len(test_idx),
                "features": names,
                "positive_rate_train": float(yt.mean()),
                "positive_rate_holdout": float(y[test_idx].mean()),
                "family": family,
                "calibration": calibration["method"] if calibration else "none",
                **selection,
                "search_seconds": search_seconds,
                "fit_seconds": time.perf_counter() - started,
            },
        )

    def evaluate(self, model: Any, request: TrainRequest) -> Evaluation:
        hp = self.hyperparameters(request.hyperparameters)
        x, y, names, train_idx, test_idx, _ = self._split(request.samples, hp, model["features"])
        y_test = y[test_idx]
        metrics = classification_metrics(y_test, scores(model, x[test_idx]))
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
                baseline = classification_metrics(y_test, scores(champion, x[test_idx]))
        request.progress(1.0)
        return Evaluation(model=model, metrics=metrics, baseline_metrics=baseline, incomparable=incomparable)

    def data_columns(self, samples: Sequence[dict[str, Any]]) -> DataColumns:
        x, names = feature_matrix(samples)
        achieved = np.array([bool(s["achieved"]) for s in samples], dtype=np.float64)
        return {n: x[:, i] for i, n in enumerate(names)}, ("achieved_rate", achieved)

    def artifact(self, model: Any) -> Artifact:
        return skops_artifact(model)

    def load(self, artifact: Artifact) -> Any:
        model = load_skops_artifact(artifact, TRUSTED)
        if not isinstance(model, dict) or not isinstance(model.get("model"), MODEL_CLASSES):
            raise ArtifactError("not a goal model artifact")
        model.setdefault("family", "random_forest")  # a goal model from before the family search
        model.setdefault("calibration", None)
        return model

    @staticmethod
    def probabilities(model: Any, samples: Sequence[dict[str, Any]]) -> np.ndarray:
        """The model's calibrated probability of achieving each goal (samples in the contract's shape)."""
        x, _ = feature_matrix(samples, model["features"])
        return scores(model, x)
