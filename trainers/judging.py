"""Judging a candidate: its gate, the drift of its training data from the champion's, and the
verdict. Pure: it takes the candidate's evaluation and the champion's profile as values and does
no I/O, so the training child calls it once and a test calls it with made-up values.

Only a `passed` verdict promotes by itself. A champion that could not be read or compared is
never replaced without a person deciding (a manual promote), whatever the fixed bounds said."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fcl.contract.enums import VerdictKind
from fcl.contract.events import Drift
from fcl.trainers import drift
from fcl.trainers.base import Evaluation, Trainer
from fcl.trainers.gates import LOWER, Check, Gate, Verdict


@dataclass(frozen=True, kw_only=True)
class Judgement:
    gate: Verdict  # every check, as decided
    verdict: VerdictKind
    message: str | None  # why, when the verdict is not `passed`
    profile: dict[str, Any]  # the candidate's training data, for the next candidate's drift
    drift: Drift | None  # None without a readable champion profile
    drift_error: str | None  # why the champion's profile could not be read


def measure_drift(
    trainer: Trainer,
    samples: Sequence[dict[str, Any]],
    *,
    champion_profile: Mapping[str, Any] | None,
    champion_version: int | None,
) -> tuple[dict[str, Any], Drift | None, str | None]:
    """The profile of the candidate's training data and, when the champion has one, the drift from
    it; a champion profile that cannot be read gives no drift and says why."""
    columns, outcome = trainer.data_columns(list(samples))
    profile = drift.profile(columns, outcome)
    if champion_profile is None or champion_version is None:
        return profile, None, None
    try:
        measured = drift.drift(columns, outcome, dict(champion_profile), reference_version=champion_version)
        return profile, Drift.model_validate(measured), None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return profile, None, f"the champion's data profile cannot be read ({type(exc).__name__}: {exc})"


def verdict(gate: Verdict, unreadable: str | None, incomparable: str | None) -> tuple[VerdictKind, str | None]:
    """The validation's verdict and why."""
    if unreadable is not None:
        return VerdictKind.CHAMPION_UNREADABLE, unreadable
    if incomparable is not None:
        return VerdictKind.INCOMPARABLE, f"not comparable with the champion: {incomparable}"
    if gate.passed:
        return VerdictKind.PASSED, None
    failed = ", ".join(f"{c.metric} ({c.kind.value})" for c in gate.failed()) or "no checks"
    return VerdictKind.FAILED, f"failed: {failed}"


def judge(
    trainer: Trainer,
    samples: Sequence[dict[str, Any]],
    evaluation: Evaluation,
    fit_metrics: Mapping[str, float],
    *,
    champion_profile: Mapping[str, Any] | None,
    champion_version: int | None,
    champion_unreadable: str | None,
    drift_max_psi: float | None,
) -> Judgement:
    """The candidate judged against the champion (its metrics are in `evaluation`): the model
    type's gate, with a `drift_psi_max` check when `drift_max_psi` is set; change checks only when
    the champion could be read and compared."""
    comparable = champion_unreadable is None and evaluation.incomparable is None
    profile, measured, drift_error = measure_drift(
        trainer, samples, champion_profile=champion_profile, champion_version=champion_version
    )
    checks, judged = trainer.gate, evaluation.metrics | dict(fit_metrics)
    if drift_max_psi is not None:  # drift is a gate only when configured so
        checks = Gate((*checks.checks, Check("drift_psi_max", LOWER, drift_max_psi, needs_champion=True)))
        if measured is not None:
            judged = judged | {"drift_psi_max": measured.psi_max}
    gate = checks.evaluate(judged, evaluation.baseline_metrics if comparable else None)
    kind, why = verdict(gate, champion_unreadable, evaluation.incomparable)
    return Judgement(gate=gate, verdict=kind, message=why, profile=profile, drift=measured, drift_error=drift_error)
