"""Judging a candidate: its gate, the drift of its training data from the champion's, and the
verdict. Pure: it takes the candidate's evaluation and the champion's profile as values and does
no I/O, so the training child calls it once and a test calls it with made-up values.

Only a `passed` verdict promotes by itself. A champion that could not be read or compared is
never replaced without a person deciding (a manual promote), whatever the fixed bounds said."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fcl.contract.enums import CheckKind, VerdictKind
from fcl.contract.events import Drift
from fcl.trainers import drift
from fcl.trainers.base import Evaluation, Trainer
from fcl.trainers.gates import HIGHER, LOWER, Check, Gate, Verdict


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


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The candidate and the champion on the champion's reference set: the held-out part of the
    data the champion was judged on, when that is another dataset than the candidate's."""

    where: str  # which data, in words ("dataset 'x' up to sample 123")
    evaluation: Evaluation


# The prefix of the checks made on the champion's reference set (`reference.mae`).
REFERENCE = "reference."
# The check that says whether the candidate's dataset may make a champion (FCL_CHAMPION_DATASETS).
MAY_PROMOTE = "champion_dataset_allowed"


def reference_checks(trainer: Trainer, reference: Reference) -> list[Check]:
    """The model type's change limits, applied on the champion's reference set."""
    return [
        Check(REFERENCE + c.metric, c.direction, c.threshold, c.kind)
        for c in trainer.gate.checks
        if c.kind is CheckKind.CHANGE
    ]


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
    reference: Reference | None = None,
    reference_error: str | None = None,
    may_promote: bool = True,
    dataset_id: str | None = None,
) -> Judgement:
    """The candidate judged against the champion (its metrics are in `evaluation`): the model
    type's gate, with a `drift_psi_max` check when `drift_max_psi` is set; change checks only when
    the champion could be read and compared. A champion judged on another dataset answers for
    the whole model type: the same change limits apply on its reference set (`reference.*`
    checks), and a reference set that cannot be judged makes the pair incomparable. A dataset
    that may not make a champion (`may_promote`) fails the `champion_dataset_allowed` check."""
    incomparable = evaluation.incomparable
    if reference_error is not None:
        incomparable = reference_error
    elif reference is not None and reference.evaluation.incomparable is not None:
        incomparable = f"on the champion's reference set ({reference.where}): {reference.evaluation.incomparable}"
    comparable = champion_unreadable is None and incomparable is None
    profile, measured, drift_error = measure_drift(
        trainer, samples, champion_profile=champion_profile, champion_version=champion_version
    )
    checks, judged = trainer.gate, evaluation.metrics | dict(fit_metrics)
    baseline = dict(evaluation.baseline_metrics) if comparable and evaluation.baseline_metrics is not None else None
    if drift_max_psi is not None:  # drift is a gate only when configured so
        checks = Gate((*checks.checks, Check("drift_psi_max", LOWER, drift_max_psi, needs_champion=True)))
        if measured is not None:
            judged = judged | {"drift_psi_max": measured.psi_max}
    if reference is not None and comparable and baseline is not None:
        checks = Gate((*checks.checks, *reference_checks(trainer, reference)))
        judged = judged | {REFERENCE + k: v for k, v in reference.evaluation.metrics.items()}
        baseline |= {REFERENCE + k: v for k, v in (reference.evaluation.baseline_metrics or {}).items()}
    if not may_promote:
        checks = Gate((*checks.checks, Check(MAY_PROMOTE, HIGHER, 1.0)))
        judged = judged | {MAY_PROMOTE: 0.0}
    gate = checks.evaluate(judged, baseline)
    kind, why = verdict(gate, champion_unreadable, incomparable)
    if kind is VerdictKind.FAILED:
        why = _why_failed(gate, reference, may_promote, dataset_id) or why
    return Judgement(gate=gate, verdict=kind, message=why, profile=profile, drift=measured, drift_error=drift_error)


def _why_failed(gate: Verdict, reference: Reference | None, may_promote: bool, dataset_id: str | None) -> str | None:
    """The failure in words, naming the reference set and the dataset rule when they are why."""
    failed = gate.failed()
    parts = [
        f"{c.metric} ({c.kind.value})" for c in failed if not c.metric.startswith(REFERENCE) and c.metric != MAY_PROMOTE
    ]
    on_reference = [c.metric.removeprefix(REFERENCE) for c in failed if c.metric.startswith(REFERENCE)]
    if on_reference and reference is not None:
        parts.append(f"regresses on the champion's reference set ({reference.where}): {', '.join(on_reference)}")
    if not may_promote:
        parts.append(f"dataset {dataset_id!r} may not make a champion of this model type (FCL_CHAMPION_DATASETS)")
    return "failed: " + "; ".join(parts) if parts else None
