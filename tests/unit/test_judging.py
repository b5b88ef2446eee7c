"""Judging a candidate from values alone (trainers.judging): the gate, drift against the
champion's data profile as a check only when configured, and a verdict that never promotes a
candidate whose champion could not be read."""

from __future__ import annotations

from dataclasses import replace

from fcl.contract.enums import VerdictKind
from fcl.trainers.base import TrainRequest
from fcl.trainers.judging import Judgement, judge, measure_drift
from fcl.trainers.registry import get_trainer
from fcl.trainers.simulator import FinCoachSimulator


def test_drift_is_a_check_only_when_configured_and_an_unreadable_champion_never_passes() -> None:
    trainer = get_trainer("goal")
    samples = FinCoachSimulator(seed=5, n_users=200).goal_samples()
    request = TrainRequest(samples=samples, seed=1, hyperparameters={"n_estimators": 20})
    fitted = trainer.fit(request)
    assessed = trainer.assess(fitted.model, replace(request, hyperparameters=fitted.hyperparameters))
    # a champion as good as the candidate, trained on the same features with every value far away
    evaluation = replace(assessed, baseline_metrics=dict(assessed.metrics))
    shifted = [{**s, "features": {k: v * 50 + 1e4 for k, v in s["features"].items()}} for s in samples]
    profile, _, _ = measure_drift(trainer, shifted, champion_profile=None, champion_version=None)

    def judged(psi: float | None, unreadable: str | None = None) -> Judgement:
        return judge(
            trainer,
            samples,
            evaluation,
            fitted.metrics,
            champion_profile=profile,
            champion_version=7,
            champion_unreadable=unreadable,
            drift_max_psi=psi,
        )

    informational = judged(None)
    assert informational.drift is not None and informational.drift.level == "major"
    assert informational.drift.reference_version == 7
    assert "drift_psi_max" not in {c.metric for c in informational.gate.checks}

    gated = judged(0.25)
    check = next(c for c in gated.gate.checks if c.metric == "drift_psi_max")
    assert not check.passed and gated.verdict is VerdictKind.FAILED and "drift_psi_max" in (gated.message or "")
    assert all(c.passed for c in gated.gate.checks if c.metric != "drift_psi_max") == informational.gate.passed

    unreadable = judged(None, "gone")
    assert (unreadable.verdict, unreadable.message) == (VerdictKind.CHAMPION_UNREADABLE, "gone")
    assert all(c.baseline is None for c in unreadable.gate.checks)  # no change checks against it
