"""The one backoff (contract.backoff): it waits out the errors it is told to retry, longer each
time up to its maximum, raises the others at once, stops when the caller says so, and never
retries a cancellation."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from fcl.contract.backoff import poll_until, retrying, retrying_blocking, wait_until

log = logging.getLogger("test")


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


async def test_retried_errors_are_waited_out_longer_each_time_up_to_the_maximum() -> None:
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    work = Flaky(6)
    assert await retrying(what="w", log=log, initial=0.1, maximum=1.0, sleep=sleep)(work) == "done"
    assert work.calls == 7 and len(waits) == 6
    assert all(0.1 <= w <= 1.0 for w in waits) and waits[-1] == 1.0 and waits[0] < 0.25


async def test_an_error_not_worth_retrying_is_raised_at_once() -> None:
    work = Flaky(3, ValueError)
    with pytest.raises(ValueError, match="failure 1"):
        await retrying(what="w", log=log, retry_on=lambda exc: isinstance(exc, ConnectionError))(work)
    assert work.calls == 1


async def test_stopping_ends_the_waiting_with_the_last_error(caplog: pytest.LogCaptureFixture) -> None:
    work, stop = Flaky(100), asyncio.Event()

    async def sleep(delay: float) -> None:
        if work.calls == 3:
            stop.set()

    with pytest.raises(ConnectionError, match="failure 4"), caplog.at_level(logging.WARNING):
        await retrying(what="the relay", log=log, should_stop=stop.is_set, sleep=sleep)(work)
    assert work.calls == 4
    assert "the relay: ConnectionError: failure 1; retrying in" in caplog.text


async def test_a_cancellation_is_never_retried() -> None:
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retrying(what="w", log=log)(cancelled)
    assert calls == 1


def test_the_blocking_form_retries_too() -> None:
    attempts = []

    def work() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("down")
        return len(attempts)

    assert retrying_blocking(what="w", log=log, initial=0.001, maximum=0.002)(work) == 3


def test_poll_until_checks_at_its_interval_until_true_or_the_deadline_and_raises_what_the_check_raises() -> None:
    calls: list[float] = []

    def third_time() -> bool:
        calls.append(time.monotonic())
        return len(calls) == 3

    assert poll_until(third_time, timeout=5.0, interval=0.05)
    assert len(calls) == 3 and all(b - a >= 0.04 for a, b in itertools.pairwise(calls))
    start = time.monotonic()
    assert not poll_until(lambda: False, timeout=0.3, interval=0.05)
    assert 0.3 <= time.monotonic() - start < 2.0

    def broken() -> bool:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        poll_until(broken, timeout=5.0, interval=0.05)


async def test_wait_until_is_poll_until_on_the_event_loop() -> None:
    calls = 0

    async def second_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 2

    assert await wait_until(second_time, timeout=5.0, interval=0.05) and calls == 2

    async def never() -> bool:
        return False

    assert not await wait_until(never, timeout=0.2, interval=0.05)
