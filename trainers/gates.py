"""Validation gates, declared per model type.

A check is a value threshold ("silhouette >= 0.15") or a change threshold against the champion
evaluated on the same held-out data ("relative change of MAE <= +0.02"), with a direction.
Relative change is (new - base) / |base|; when base is 0 the change is 0 if new equals base and
otherwise infinite in the direction of the difference. A missing (or non-finite) metric fails its
check. Without a champion, change checks are skipped and the candidate is judged on value checks
alone. Every check is kept, so "why was this not promoted" always has an answer. A decided check
is the contract's `ValidationCheck`, the one shape storage, events and the API share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fcl.contract.enums import CheckKind, Direction
from fcl.contract.events import ValidationCheck

HIGHER = Direction.HIGHER_IS_BETTER
LOWER = Direction.LOWER_IS_BETTER


@dataclass(frozen=True)
class Check:
    metric: str
    direction: Direction
    threshold: float
    kind: CheckKind = CheckKind.VALUE
    needs_champion: bool = False  # a value check whose metric exists only against a champion


def relative_change(new: float, base: float) -> float:
    if base == 0:
        return 0.0 if new == base else math.copysign(math.inf, new - base)
    return (new - base) / abs(base)


def _meets(value: float, direction: Direction, threshold: float) -> bool:
    return value >= threshold if direction is Direction.HIGHER_IS_BETTER else value <= threshold


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[ValidationCheck]

    def failed(self) -> list[ValidationCheck]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class Gate:
    checks: tuple[Check, ...]

    def evaluate(self, metrics: dict[str, float], champion: dict[str, float] | None) -> Verdict:
        results = []
        for check in self.checks:
            if (check.kind is CheckKind.CHANGE or check.needs_champion) and champion is None:
                continue
            value, baseline = _finite(metrics.get(check.metric)), None
            if check.kind is CheckKind.CHANGE:
                assert champion is not None
                baseline = _finite(champion.get(check.metric))
                value = None if value is None or baseline is None else relative_change(value, baseline)
            results.append(
                ValidationCheck(
                    metric=check.metric,
                    kind=check.kind,
                    value=value,
                    baseline=baseline,
                    threshold=check.threshold,
                    direction=check.direction,
                    passed=value is not None and _meets(value, check.direction, check.threshold),
                )
            )
        return Verdict(passed=all(r.passed for r in results) and bool(results), checks=results)
