"""The retry policy as a pure decision: which failures go back to the queue and after how long."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from fcl.storage.retry import Attempt, AttemptError, RetryPolicy, retry_decision

POLICY = RetryPolicy(base_seconds=5.0, max_seconds=300.0)
RETRIABLE = AttemptError(type="NonFiniteLossError", message="loss became nan", retriable=True)


def test_an_error_that_retrying_cannot_fix_fails_at_once() -> None:
    decision = retry_decision(
        AttemptError(type="InvalidDataError", message="too few", retriable=False),
        Attempt(number=1, max_attempts=3),
        POLICY,
        random.Random(1),
    )
    assert not decision.retry and decision.delay == timedelta(0) and "InvalidDataError" in decision.reason


def test_the_last_attempt_is_not_retried() -> None:
    decision = retry_decision(RETRIABLE, Attempt(number=3, max_attempts=3), POLICY, random.Random(1))
    assert not decision.retry and decision.reason == "all 3 attempts used" and decision.message == decision.reason


@pytest.mark.parametrize(("attempt", "base"), [(1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (7, 300.0), (20, 300.0)])
def test_delays_double_per_attempt_up_to_the_maximum_with_equal_jitter(attempt: int, base: float) -> None:
    delays = [
        retry_decision(RETRIABLE, Attempt(number=attempt, max_attempts=99), POLICY, random.Random(seed)).delay
        for seed in range(200)
    ]
    assert all(timedelta(seconds=base / 2) <= d <= timedelta(seconds=base) for d in delays)
    spread = max(delays) - min(delays)
    assert spread > timedelta(seconds=base / 4)  # the jitter spreads the herd


def test_the_randomness_is_the_callers() -> None:
    a = retry_decision(RETRIABLE, Attempt(number=2, max_attempts=3), POLICY, random.Random(42))
    b = retry_decision(RETRIABLE, Attempt(number=2, max_attempts=3), POLICY, random.Random(42))
    assert a == b and a.retry and a.message == f"retrying in {a.delay.total_seconds():.0f}s"
    low = retry_decision(RETRIABLE, Attempt(number=1, max_attempts=3), POLICY, _Fixed(0.0))
    high = retry_decision(RETRIABLE, Attempt(number=1, max_attempts=3), POLICY, _Fixed(0.999999))
    assert low.delay == timedelta(seconds=2.5) and high.delay == pytest.approx(
        timedelta(seconds=5.0), abs=timedelta(0.001)
    )


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value
