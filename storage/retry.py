"""The retry policy of a failed attempt: a pure decision, the worker does the I/O.

`retry_decision(error, attempt, policy, rng)` says whether a failed attempt goes back to the
queue and after how long: an error that retrying cannot fix fails the job at once; otherwise it
is retried with exponential backoff and "equal jitter" (half the delay fixed, half random, drawn
from the `rng` the caller passes) until the job's attempts are used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    base_seconds: float = 5.0  # the delay after the first failed attempt, before jitter
    max_seconds: float = 300.0  # the longest delay, before jitter


@dataclass(frozen=True, kw_only=True)
class AttemptError:
    """What ended an attempt: the error's type and message, and whether another try may help."""

    type: str
    message: str
    retriable: bool


@dataclass(frozen=True, kw_only=True)
class Attempt:
    number: int  # 1 for the first attempt
    max_attempts: int


@dataclass(frozen=True, kw_only=True)
class RetryDecision:
    retry: bool
    delay: timedelta = timedelta(0)
    reason: str = ""

    @property
    def message(self) -> str:
        """What the job's status event says about it."""
        return f"retrying in {self.delay.total_seconds():.0f}s" if self.retry else self.reason


def retry_decision(error: AttemptError, attempt: Attempt, policy: RetryPolicy, rng: random.Random) -> RetryDecision:
    if not error.retriable:
        return RetryDecision(retry=False, reason=f"{error.type} cannot be fixed by retrying")
    if attempt.number >= attempt.max_attempts:
        return RetryDecision(retry=False, reason=f"all {attempt.max_attempts} attempts used")
    base = min(policy.max_seconds, policy.base_seconds * 2 ** max(0, attempt.number - 1))
    return RetryDecision(retry=True, delay=timedelta(seconds=base * (0.5 + rng.random() / 2)))
