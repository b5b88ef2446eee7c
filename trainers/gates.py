"""Validation gates, declared per model type.

A check is a value threshold ("silhouette >= 0.15") or a change threshold against the champion
evaluated on the same held-out data ("relative change of MAE <= +0.02"), with a direction.
Relative change is (new - base) / |base|; when base is 0 the change is 0 if new equals base and
otherwise infinite in the direction of the difference. A missing (or non-finite) metric fails its
check. Without a champion, change checks are skipped and the candidate is judged on value checks
alone. Every check is kept, so "why was this not promoted" always has an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


@dataclass(frozen=True)
class Check:
    metric: str
    direction: Direction
    threshold: float
    kind: str = "value"  # "value" or "change"
    needs_champion: bool = False  # a value check whose metric exists only against a champion


@dataclass(frozen=True)
class CheckResult:
    metric: str
    value: float | None  # the candidate's metric (value check) or the relative change (change check)
    baseline: float | None  # the champion's metric on the same data (change checks)
    threshold: float
    direction: Direction
    passed: bool
    kind: str

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "value": self.value,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "direction": self.direction.value,
            "passed": self.passed,
            "kind": self.kind,
        }


def relative_change(new: float, base: float) -> float:
    if base == 0:
        return 0.0 if new == base else math.copysign(math.inf, new - base)
    return (new - base) / abs(base)


def _meets(value: float, direction: Direction, threshold: float) -> bool:
    return value >= threshold if direction is Direction.HIGHER_IS_BETTER else value <= threshold


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[CheckResult]

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


@dataclass(frozen=True)
class Gate:
    checks: tuple[Check, ...]

    def evaluate(self, metrics: dict[str, float], champion: dict[str, float] | None) -> Verdict:
        results = []
        for check in self.checks:
            if check.kind == "change" or check.needs_champion:
                if champion is None:
                    continue
            value = metrics.get(check.metric)
            if check.kind == "value":
                ok = _finite(value) and _meets(value, check.direction, check.threshold)  # type: ignore[arg-type]
                results.append(
                    CheckResult(
                        check.metric,
                        value if _finite(value) else None,
                        None,
                        check.threshold,
                        check.direction,
                        bool(ok),
                        "value",
                    )
                )
            elif check.kind == "change":
                assert champion is not None
                base = champion.get(check.metric)
                if not (_finite(value) and _finite(base)):
                    results.append(
                        CheckResult(
                            check.metric,
                            None,
                            base if _finite(base) else None,
                            check.threshold,
                            check.direction,
                            False,
                            "change",
                        )
                    )
                    continue
                change = relative_change(value, base)  # type: ignore[arg-type]
                results.append(
                    CheckResult(
                        check.metric,
                        change,
                        base,
                        check.threshold,
                        check.direction,
                        _meets(change, check.direction, check.threshold),
                        "change",
                    )
                )
            else:
                raise ValueError(f"unknown check kind {check.kind!r}")
        return Verdict(passed=all(r.passed for r in results) and bool(results), checks=results)


HIGHER = Direction.HIGHER_IS_BETTER
LOWER = Direction.LOWER_IS_BETTER
