"""The verdict's drift: PSI per feature on the champion's bins, the outcome's change, and what each
trainer hands it. Property-based: any finite data gives a finite, non-negative PSI and a profile
that is plain JSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fcl.contract.events import Drift
from fcl.contract.limits import MAX_NUMBER
from fcl.trainers import drift
from fcl.trainers.registry import get_trainer
from fcl.trainers.simulator import FinCoachSimulator

RNG = np.random.default_rng(0)


def _drift(reference: dict[str, Any], candidate: dict[str, Any], outcome: Any = None, ref_outcome: Any = None) -> Drift:
    ref = drift.profile({k: np.asarray(v) for k, v in reference.items()}, ref_outcome)
    return Drift.model_validate(drift.drift(candidate, outcome, ref, reference_version=7))


def test_the_same_population_is_stable_and_a_shifted_one_is_major() -> None:
    base = RNG.normal(size=20_000)
    same = RNG.normal(size=20_000)
    moved = RNG.normal(loc=1.0, size=20_000)
    result = _drift({"income": base, "spend": base}, {"income": same, "spend": moved})
    assert result.reference_version == 7
    assert result.psi["income"] < 0.01 and result.psi["spend"] > drift.MAJOR
    assert result.psi_max == result.psi["spend"] and result.level == "major"
    # the textbook value for a one-sd shift of a normal on deciles is about 0.7-1.0
    assert 0.5 < result.psi["spend"] < 1.5
    assert _drift({"x": base}, {"x": RNG.normal(loc=0.35, size=20_000)}).level == "moderate"


def test_features_only_one_side_has_are_named_and_not_scored() -> None:
    result = _drift(
        {"a": RNG.normal(size=500), "old": RNG.normal(size=500)},
        {"a": RNG.normal(size=500), "new": 1.0 + RNG.normal(size=500)},
    )
    assert set(result.psi) == {"a"}
    assert result.features_only_in_champion == ["old"] and result.features_only_in_candidate == ["new"]


def test_constant_and_few_valued_features_get_as_many_bins_as_they_have_values() -> None:
    ones = np.ones(1000)
    same = _drift({"flag": ones}, {"flag": np.ones(300)})
    assert same.psi["flag"] == pytest.approx(0.0)
    assert _drift({"flag": ones}, {"flag": np.full(300, 2.0)}).psi["flag"] > 1.0  # everything left the bin
    actions = np.array([0, 1, 2, 3] * 250, dtype=float)
    profile = drift.profile({"action": actions}, None)
    # below 0, 0, (0, 1], (1, 2], (2, 3], above 3
    assert len(profile["features"]["action"]["shares"]) == len(profile["features"]["action"]["edges"]) + 1 == 6
    assert _drift({"flag": ones}, {"flag": np.zeros(300)}).psi["flag"] > 1.0  # and downwards


def test_the_outcome_change_is_measured_and_relative_only_to_a_nonzero_mean() -> None:
    x = {"x": RNG.normal(size=400)}
    result = _drift(
        x,
        x,
        outcome=("achieved_rate", np.array([1.0, 0.0, 1.0, 1.0])),
        ref_outcome=("achieved_rate", np.array([1.0, 0.0])),
    )
    assert result.outcome is not None
    assert (result.outcome.champion, result.outcome.candidate) == (0.5, 0.75)
    assert result.outcome.change == pytest.approx(0.25) and result.outcome.relative_change == pytest.approx(0.5)
    zero = _drift(x, x, outcome=("reward_mean", np.array([1.0])), ref_outcome=("reward_mean", np.array([0.0])))
    assert zero.outcome is not None and zero.outcome.relative_change is None
    other = _drift(x, x, outcome=("reward_mean", np.array([1.0])), ref_outcome=("achieved_rate", np.array([0.0])))
    assert other.outcome is None  # different outcomes are not compared


finite = st.floats(min_value=-MAX_NUMBER, max_value=MAX_NUMBER, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    reference=arrays(np.float64, st.integers(1, 300), elements=finite),
    candidate=arrays(np.float64, st.integers(1, 300), elements=finite),
)
def test_any_finite_data_gives_a_finite_nonnegative_psi_and_a_json_profile(reference, candidate) -> None:
    profile = drift.profile({"f": reference}, ("m", reference))
    assert json.loads(json.dumps(profile, allow_nan=False)) == profile
    shares = profile["features"]["f"]["shares"]
    assert sum(shares) == pytest.approx(1.0)
    result = Drift.model_validate(drift.drift({"f": candidate}, ("m", candidate), profile, reference_version=1))
    assert np.isfinite(result.psi["f"]) and result.psi["f"] >= 0.0
    self_psi = drift.drift({"f": reference}, None, profile, reference_version=1)["psi"]["f"]
    assert self_psi == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("model_type", ["goal", "segmentation", "recommendation", "spending"])
def test_every_trainer_hands_drift_one_value_per_sample_and_feature(model_type: str) -> None:
    sim = FinCoachSimulator(seed=2, n_users=60)
    samples = {
        "goal": sim.goal_samples,
        "segmentation": sim.segmentation_samples,
        "recommendation": lambda: sim.recommendation_samples(20),
        "spending": lambda: list(sim.spending_samples(days=10)),
    }[model_type]()
    columns, outcome = get_trainer(model_type).data_columns(samples)
    assert columns and all(np.isfinite(v).all() for v in columns.values())
    rows = 60 if model_type == "segmentation" else len(samples)  # segmentation: one row per user
    assert {len(v) for v in columns.values()} == {rows}
    if model_type == "segmentation":
        assert outcome is None
    else:
        assert outcome is not None and len(outcome[1]) == len(samples)
    assert json.dumps(drift.profile(columns, outcome), allow_nan=False)


def test_the_cli_sums_a_drift_up_in_one_line() -> None:
    from fcl.operator import drift_summary

    x = {"a": RNG.normal(size=400), "b": RNG.normal(size=400)}
    measured = _drift(x, {"a": x["a"], "b": x["b"] + 2.0}, ("reward_mean", np.ones(3)), ("reward_mean", np.zeros(3)))
    line = drift_summary(measured.model_dump(mode="json"))
    assert line.startswith("drift from v7's data: major (largest PSI ")
    assert line.index("b ") < line.index("a ") and line.endswith("reward_mean 0.0000 -> 1.0000")
    assert drift_summary(None) == "drift: not measured (no champion data profile)"


def test_the_child_keeps_manifest_info_as_json_postgresql_takes_and_survives_a_broken_champion_profile() -> None:
    from fcl.trainers.judging import measure_drift
    from fcl.worker.child import jsonable
    from tests.fakes import training_task

    info = {"n": np.int64(3), "f": np.float32(0.5), "bad": float("nan"), "t": (1, np.inf), "o": object, 4: "k"}
    clean = jsonable(info)
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert (clean["n"], clean["f"], clean["bad"], clean["t"], clean["4"]) == (3, 0.5, None, [1, None], "k")

    samples = FinCoachSimulator(seed=3, n_users=50).goal_samples()
    task = training_task(
        champion_version=3,
        champion_profile={"features": {"months": {"edges": "not a list", "shares": [1.0]}}},
    )
    profile, measured, error = measure_drift(
        get_trainer("goal"), samples, champion_profile=task.champion_profile, champion_version=task.champion_version
    )
    assert measured is None and error is not None and error.startswith("the champion's data profile cannot be read")
    assert set(profile["features"]) == set(samples[0]["features"])
    good = task.__class__(**{**task.__dict__, "champion_profile": profile})
    _, again, error = measure_drift(
        get_trainer("goal"), samples, champion_profile=good.champion_profile, champion_version=good.champion_version
    )
    assert error is None and again is not None and again.psi_max == pytest.approx(0.0, abs=1e-12)
