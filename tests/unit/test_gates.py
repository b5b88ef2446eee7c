"""Validation gates: value and change checks, directions, missing metrics, no champion."""

from __future__ import annotations

import math

import pytest

from fcl.contract.enums import CheckKind
from fcl.trainers.gates import HIGHER, LOWER, Check, Gate, relative_change

GATE = Gate(
    (
        Check("auc", HIGHER, 0.6),
        Check("mae", LOWER, 10.0),
        Check("auc", HIGHER, -0.01, kind=CheckKind.CHANGE),
        Check("mae", LOWER, 0.02, kind=CheckKind.CHANGE),
        Check("ari", HIGHER, 0.5, needs_champion=True),
    )
)


def test_relative_change_is_new_minus_base_over_abs_base() -> None:
    assert relative_change(1.1, 1.0) == pytest.approx(0.1)
    assert relative_change(-0.9, -1.0) == pytest.approx(0.1)  # |base|: moving up from -1 is +10 %
    assert relative_change(2.0, 0.0) == math.inf and relative_change(-2.0, 0.0) == -math.inf
    assert relative_change(0.0, 0.0) == 0.0


def test_a_first_model_is_judged_on_value_checks_alone() -> None:
    verdict = GATE.evaluate({"auc": 0.7, "mae": 5.0}, None)
    assert verdict.passed
    assert [(c.metric, c.kind) for c in verdict.checks] == [("auc", "value"), ("mae", "value")]


def test_value_checks_respect_their_direction() -> None:
    verdict = GATE.evaluate({"auc": 0.55, "mae": 12.0}, None)
    assert not verdict.passed
    assert {(c.metric, c.value, c.threshold) for c in verdict.failed()} == {("auc", 0.55, 0.6), ("mae", 12.0, 10.0)}


def test_change_checks_compare_with_the_champion_on_the_same_data() -> None:
    champion = {"auc": 0.80, "mae": 5.0}
    better = GATE.evaluate({"auc": 0.81, "mae": 4.9, "ari": 0.9}, champion)
    assert better.passed and len(better.checks) == 5
    worse = GATE.evaluate({"auc": 0.78, "mae": 5.5, "ari": 0.9}, champion)
    failed = {c.metric: c for c in worse.failed()}
    assert set(failed) == {"auc", "mae"}
    assert failed["auc"].value == pytest.approx(-0.025) and failed["auc"].baseline == 0.80
    assert failed["mae"].value == pytest.approx(0.1) and failed["mae"].kind == "change"


def test_a_missing_or_non_finite_metric_fails_its_check() -> None:
    verdict = GATE.evaluate({"auc": 0.9}, None)
    assert not verdict.passed and [c.metric for c in verdict.failed()] == ["mae"]
    assert verdict.failed()[0].value is None
    assert not GATE.evaluate({"auc": float("nan"), "mae": 1.0}, None).passed
    # the champion could not be evaluated on this data: its metrics are missing, change checks fail
    verdict = GATE.evaluate({"auc": 0.9, "mae": 1.0, "ari": 0.9}, {})
    assert not verdict.passed and {c.kind for c in verdict.failed()} == {"change"}


def test_every_check_is_kept_with_what_explains_it() -> None:
    verdict = GATE.evaluate({"auc": 0.7, "mae": 5.0, "ari": 0.2}, {"auc": 0.7, "mae": 5.0})
    rows = [c.model_dump(mode="json") for c in verdict.checks]
    assert all(set(r) == {"metric", "value", "baseline", "threshold", "direction", "passed", "kind"} for r in rows)
    assert [r["metric"] for r in rows if not r["passed"]] == ["ari"]
    assert not verdict.passed


def test_an_empty_gate_never_passes() -> None:
    assert not Gate(()).evaluate({"auc": 1.0}, None).passed
