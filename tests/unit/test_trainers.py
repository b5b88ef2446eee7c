"""The four trainers on simulated FinCoach data: they learn what the simulator planted, they are
judged honestly against baselines and the champion, and they fail clearly on bad input.
The simulator knows the truth (segments, a policy's true value); the gates never see it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from fcl.contract import model_types
from fcl.trainers.base import InvalidDataError, NonFiniteLossError, TrainRequest, UnknownModelTypeError
from fcl.trainers.manifest import build_manifest
from fcl.trainers.recommendation import RecommendationTrainer
from fcl.trainers.registry import get_trainer
from fcl.trainers.segmentation import SegmentationTrainer
from fcl.trainers.simulator import FinCoachSimulator

# The tests that share an expensive module fixture run on one worker under xdist (the fixture is
# made once); the others spread over the workers.
GOAL_CHAMPION = pytest.mark.xdist_group("goal_champion")
CQL_CHAMPION = pytest.mark.xdist_group("cql_champion")

SIM = FinCoachSimulator(seed=11, n_users=3000)


def test_the_registry_knows_the_four_model_types_and_refuses_others() -> None:
    assert sorted(model_types.names()) == ["goal", "recommendation", "segmentation", "spending"]
    assert all(get_trainer(name).model_type == name for name in model_types.names())
    with pytest.raises(UnknownModelTypeError, match="unknown model type 'churn'"):
        get_trainer("churn")
    with pytest.raises(InvalidDataError, match="unknown hyperparameters"):
        get_trainer("goal").train(TrainRequest(samples=SIM.goal_samples(), hyperparameters={"depth": 3}))


def test_the_simulator_is_deterministic_by_seed() -> None:
    a, b = FinCoachSimulator(5, 200), FinCoachSimulator(5, 200)
    assert a.segmentation_samples() == b.segmentation_samples()
    assert a.recommendation_samples(20) == b.recommendation_samples(20)
    assert a.goal_samples() == b.goal_samples()
    assert FinCoachSimulator(6, 200).segmentation_samples() != a.segmentation_samples()


# -- segmentation -----------------------------------------------------------------------------------
def test_kmeans_recovers_the_planted_segments_and_keeps_ids_across_retrains() -> None:
    trainer = get_trainer("segmentation")
    samples = SIM.segmentation_samples()
    progress: list[float] = []
    first = trainer.train(TrainRequest(samples=samples, seed=1, progress=progress.append))
    truth = SIM.true_segments()
    labels = SegmentationTrainer.assign(first.model, samples)
    ari = adjusted_rand_score([truth[s["user_id"]] for s in samples], labels)
    assert ari >= 0.9, first.metrics
    assert first.metrics["k"] == 4 and progress[-1] == 1.0 and progress == sorted(progress)
    assert {"silhouette", "calinski_harabasz", "davies_bouldin", "smallest_segment_share"} <= set(first.metrics)
    assert trainer.gate.evaluate(first.metrics, None).passed

    # Retrain on new users of the same population with another seed: K-means numbers its clusters
    # arbitrarily, but the aligned ids agree with the champion's assignment.
    newer = FinCoachSimulator(seed=12, n_users=3000).segmentation_samples()
    second = trainer.train(TrainRequest(samples=newer, seed=7, champion=first.artifact))
    champion = trainer.load(first.artifact)
    assert (
        np.mean(SegmentationTrainer.assign(second.model, newer) == SegmentationTrainer.assign(champion, newer)) > 0.95
    )
    assert second.metrics["stability_ari"] > 0.9 and second.baseline_metrics is not None
    assert trainer.gate.evaluate(second.metrics, second.baseline_metrics).passed


def test_kmeans_evaluation_reuses_its_fit_and_measures_what_a_fresh_evaluation_measures() -> None:
    """The evaluation of a model just fitted takes the fit's scaled rows, assignments and
    silhouette instead of computing them again; the figures are those computed from scratch."""
    samples = FinCoachSimulator(seed=3, n_users=600).segmentation_samples()
    request = TrainRequest(samples=samples, seed=5)
    trainer = SegmentationTrainer()
    fitted = trainer.fit(request)
    assert trainer._fitted is not None and trainer._fitted.pipeline is fitted.model["pipeline"]
    reused = trainer.evaluate(fitted.model, request)
    assert trainer._fitted is None  # kept only until its evaluation
    fresh = SegmentationTrainer().evaluate(fitted.model, TrainRequest(samples=list(samples), seed=5))
    assert reused.metrics == fresh.metrics and reused.model["segment_ids"] == fresh.model["segment_ids"]
    assert reused.metrics["silhouette"] == fitted.info["silhouette_by_k"][int(reused.metrics["k"])]


def test_segmentation_refuses_samples_with_different_features() -> None:
    samples = SIM.segmentation_samples()[:200]
    samples[5] = {"user_id": "odd", "features": {"monthly_income": 1.0}}
    with pytest.raises(InvalidDataError, match="sample 5"):
        get_trainer("segmentation").train(TrainRequest(samples=samples))


# -- goal -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")  # once per worker: xdist may run other modules in between
def goal_champion():
    # any iterable of samples will do, a generator here (materialized: the field's type is what trainers see)
    return get_trainer("goal").train(TrainRequest(samples=iter(SIM.goal_samples()), seed=1))  # type: ignore[arg-type]


@GOAL_CHAMPION
def test_the_chosen_family_beats_or_ties_logistic_regression_and_the_prior(goal_champion) -> None:
    m = goal_champion.metrics
    assert m["roc_auc"] >= m["logreg_roc_auc"] - 0.01, m
    assert m["brier_skill"] > 0, m
    assert m["brier"] < m["prior_brier"]
    info = goal_champion.info
    assert abs(info["positive_rate_train"] - info["positive_rate_holdout"]) < 0.05


@GOAL_CHAMPION
def test_a_worse_goal_candidate_is_refused_with_the_failing_checks(goal_champion) -> None:
    trainer = get_trainer("goal")
    weak = trainer.train(
        TrainRequest(
            samples=SIM.goal_samples(),
            seed=2,
            champion=goal_champion.artifact,
            hyperparameters={
                "families": ["random_forest"],
                "calibration": "none",
                "n_estimators": 1,
                "min_samples_leaf": 400,
            },
        )
    )
    # the champion is scored on the candidate's holdout, which it never trained on (same user hash)
    assert weak.baseline_metrics is not None
    assert weak.baseline_metrics["roc_auc"] == pytest.approx(goal_champion.metrics["roc_auc"])
    verdict = trainer.gate.evaluate(weak.metrics, weak.baseline_metrics)
    assert not verdict.passed
    assert {(c.metric, c.kind) for c in verdict.failed()} >= {("roc_auc", "change")}


@GOAL_CHAMPION
def test_a_candidate_with_other_features_is_incomparable_and_never_promotes_by_itself(goal_champion) -> None:
    from fcl.contract.enums import VerdictKind
    from fcl.trainers.judging import verdict as judge

    trainer = get_trainer("goal")
    renamed = next(iter(SIM.goal_samples()[0]["features"]))
    samples = [
        {**s, "features": {(k + "_v2" if k == renamed else k): v for k, v in s["features"].items()}}
        for s in SIM.goal_samples()
    ]
    request = TrainRequest(samples=samples, seed=2, champion=goal_champion.artifact)
    fitted = trainer.fit(request)
    evaluation = trainer.assess(fitted.model, request)
    assert evaluation.incomparable is not None and evaluation.baseline_metrics == {}
    assert repr(renamed) in evaluation.incomparable and repr(renamed + "_v2") in evaluation.incomparable
    gate = trainer.gate.evaluate(evaluation.metrics, None)  # its fixed bounds, for information
    assert judge(gate, None, evaluation.incomparable) == (
        VerdictKind.INCOMPARABLE,
        f"not comparable with the champion: {evaluation.incomparable}",
    )
    assert judge(gate, "the artifact of champion goal v1 cannot be read", None)[0] is VerdictKind.CHAMPION_UNREADABLE
    same = TrainRequest(samples=SIM.goal_samples(), seed=2, champion=goal_champion.artifact)
    assert trainer.assess(trainer.fit(same).model, same).incomparable is None


# -- spending ---------------------------------------------------------------------------------------
SPEND_HP = {"steps_per_epoch": 100, "max_epochs": 12, "hidden": 32}


def test_the_lstm_beats_the_seasonal_naive() -> None:
    sim = FinCoachSimulator(seed=21, n_users=300)
    result = get_trainer("spending").train(
        TrainRequest(samples=list(sim.spending_samples(days=200)), seed=3, hyperparameters=SPEND_HP)
    )
    m = result.metrics
    assert m["relative_mae_seasonal_naive"] <= 0.9, m
    assert m["mae"] < m["moving_average_mae"] and m["mase"] < 1.0
    assert get_trainer("spending").gate.evaluate(m, None).passed


def test_torch_trainers_are_deterministic_on_the_cpu() -> None:
    sim = FinCoachSimulator(seed=22, n_users=40)
    samples = list(sim.spending_samples(days=120))
    hp: dict[str, Any] = {"steps_per_epoch": 5, "max_epochs": 2, "hidden": 8}
    a = get_trainer("spending").train(TrainRequest(samples=samples, seed=9, hyperparameters=hp, device="cpu"))
    b = get_trainer("spending").train(TrainRequest(samples=samples, seed=9, hyperparameters=hp, device="cpu"))
    assert a.artifact.data == b.artifact.data and a.metrics == b.metrics
    transitions = sim.recommendation_samples(200)
    hp = {"steps": 50, "fqe_steps": 50, "hidden": [16], "fqe_hidden": [16]}
    c = get_trainer("recommendation").train(TrainRequest(samples=transitions, seed=4, hyperparameters=hp, device="cpu"))
    d = get_trainer("recommendation").train(TrainRequest(samples=transitions, seed=4, hyperparameters=hp, device="cpu"))
    assert c.artifact.data == d.artifact.data and c.metrics == d.metrics


def test_a_diverging_loss_fails_the_training_with_a_clear_error() -> None:
    sim = FinCoachSimulator(seed=23, n_users=30)
    with pytest.raises(NonFiniteLossError, match="became"):
        get_trainer("recommendation").train(
            TrainRequest(
                samples=[s | {"reward": s["reward"] * 1e30} for s in sim.recommendation_samples(100)],
                seed=1,
                hyperparameters={"steps": 200, "learning_rate": 10.0, "hidden": [16]},
            )
        )


def test_spending_refuses_too_short_a_history() -> None:
    sim = FinCoachSimulator(seed=24, n_users=5)
    with pytest.raises(InvalidDataError, match="days of history"):
        get_trainer("spending").train(TrainRequest(samples=list(sim.spending_samples(days=60))))


# -- recommendation ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")  # once per worker: xdist may run other modules in between
def cql_champion():
    samples = SIM.recommendation_samples(4000)
    return get_trainer("recommendation").train(TrainRequest(samples=samples, seed=1, device="cpu"))


@CQL_CHAMPION
def test_cql_beats_the_behaviour_policy_and_fqe_estimates_its_true_value(cql_champion) -> None:
    trainer = get_trainer("recommendation")
    true_value = SIM.policy_value(RecommendationTrainer.policy(cql_champion.model))
    behaviour = SIM.policy_value(None)
    assert true_value >= 1.10 * behaviour, (true_value, behaviour)
    fqe = cql_champion.metrics["fqe_value"]
    assert abs(fqe - true_value) <= 0.20 * true_value, (fqe, true_value)
    assert abs(cql_champion.metrics["behavior_return"] - behaviour) <= 0.1 * behaviour
    assert cql_champion.metrics["wis_ess"] >= 0 and np.isfinite(cql_champion.metrics["wis_value"])
    assert trainer.gate.evaluate(cql_champion.metrics, None).passed


@CQL_CHAMPION
def test_a_worse_policy_is_refused_against_the_champion(cql_champion) -> None:
    trainer = get_trainer("recommendation")
    weak = trainer.train(
        TrainRequest(
            samples=SIM.recommendation_samples(4000),
            seed=2,
            device="cpu",
            champion=cql_champion.artifact,
            hyperparameters={"steps": 20},
        )
    )
    verdict = trainer.gate.evaluate(weak.metrics, weak.baseline_metrics)
    assert not verdict.passed
    assert ("fqe_value", "change") in {(c.metric, c.kind) for c in verdict.failed()}
    assert weak.baseline_metrics is not None and weak.baseline_metrics["fqe_value"] > weak.metrics["fqe_value"]


@GOAL_CHAMPION
def test_the_manifest_names_everything_that_made_the_model(goal_champion) -> None:
    samples = SIM.goal_samples()
    manifest = build_manifest(
        model_type="goal",
        seed=1,
        hyperparameters=goal_champion.hyperparameters,
        samples=samples,
        dataset_watermark=len(samples),
        info=goal_champion.info,
    )
    assert (
        manifest.dataset_hash
        == build_manifest(
            model_type="goal", seed=1, hyperparameters={}, samples=samples, dataset_watermark=None, info={}
        ).dataset_hash
    )
    assert (
        manifest.dataset_hash
        != build_manifest(
            model_type="goal", seed=1, hyperparameters={}, samples=samples[1:], dataset_watermark=None, info={}
        ).dataset_hash
    )
    assert {"torch", "scikit-learn", "numpy", "python"} <= set(manifest.library_versions)
    assert "+" in manifest.code_version and manifest.hyperparameters["n_estimators"] == 300


def _endless_chain(episodes: int, length: int) -> list[dict[str, Any]]:
    """Episodes of one state, reward 1 a step, cut by a time limit (never terminal): every policy's
    discounted value is 1 / (1 - gamma) (up to gamma^length)."""
    return [
        {
            "user_id": "u",
            "episode_id": f"e{e}",
            "t": t,
            "state": [0.0, 1.0],
            "action": (e + t) % 2,
            "reward": 1.0,
            "next_state": [0.0, 1.0],
            "done": False,
            "behavior_prob": 0.5,
        }
        for e in range(episodes)
        for t in range(length)
    ]


def test_fqe_runs_as_many_bellman_iterations_as_the_value_reaches() -> None:
    from fcl.trainers.recommendation import Transitions, fitted_q_evaluation, fqe_schedule, make_q_network

    data = Transitions(_endless_chain(20, 60), None)
    hp = RecommendationTrainer.defaults | {"gamma": 0.9, "fqe_steps": 300, "fqe_hidden": [16], "batch_size": 64}
    steps, interval = fqe_schedule(data, hp)
    assert (steps, interval) == (44 * 25, 25)  # 0.9^44 < 1 % <= 0.9^43; 300 steps alone made one iteration
    truth = (1 - 0.9**60) / (1 - 0.9)
    import torch

    policy = make_q_network(2, 2, [4])
    value = fitted_q_evaluation(data, policy, hp, seed=1, device=torch.device("cpu"))
    assert abs(value - truth) / truth < 0.1, (value, truth)
    # episodes that all end in a terminal state cap the iterations at the longest one
    finite = [s | {"done": s["t"] == 9} for s in _endless_chain(20, 10)]
    assert fqe_schedule(Transitions(finite, None), hp)[0] == 300  # 10 iterations of 30 steps fit the budget
    # FinCoach's horizon keeps its schedule: 3,000 steps, a target update every 250
    sim = FinCoachSimulator(seed=1, n_users=100).recommendation_samples(50)
    assert fqe_schedule(Transitions(sim, None), RecommendationTrainer.defaults) == (3000, 250)
