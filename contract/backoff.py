"""The one backoff of every loop that waits out an outage (a database, a broker, a listener
connection that went away), from tenacity: exponential from `initial` up to `maximum` seconds,
with up to `initial` of random jitter so that many processes do not retry in step, logged once per
wait, until the work succeeds, the error is not worth retrying, or the caller says stop.

tenacity rather than stamina (which wraps it): each loop here needs its own stop condition (the
process is stopping), its own log line and, in the streams agents, its own sleep; tenacity takes
all three per call, stamina only globally.

`poll_until` is the other kind of wait, for something to become true (a server answers, a process
is gone): the same check at a fixed interval until a deadline, also from tenacity.

    result = await retrying(what="outbox relay", log=log, should_stop=stopping)(publish_once)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential_jitter,
    wait_fixed,
)

T = TypeVar("T")
INITIAL = 0.1
MAXIMUM = 5.0


def _settings(
    what: str,
    log: logging.Logger,
    retry_on: Callable[[BaseException], bool],
    should_stop: Callable[[], bool] | None,
    initial: float,
    maximum: float,
) -> dict[str, Any]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s: %s: %s; retrying in %.1fs", what, type(error).__name__, error, wait)

    return {
        "wait": wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        # a cancellation or an exit is never retried, whatever retry_on says
        "retry": retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_on(exc)),
        "stop": (lambda _state: should_stop()) if should_stop is not None else stop_never,
        "before_sleep": before_sleep,
        "reraise": True,  # when it gives up, the caller sees the work's own last error
    }


class Backoff:
    """Awaits a coroutine function again and again, as its `AsyncRetrying` says."""

    def __init__(self, policy: AsyncRetrying) -> None:
        self.policy = policy

    async def __call__(self, work: Callable[[], Awaitable[T]]) -> T:
        async for attempt in self.policy:
            with attempt:
                return await work()
        raise AssertionError("tenacity ended without an outcome")  # reraise=True raises the last error


def retrying(
    *,
    what: str,
    log: logging.Logger,
    retry_on: Callable[[BaseException], bool] = lambda _exc: True,
    should_stop: Callable[[], bool] | None = None,
    initial: float = INITIAL,
    maximum: float = MAXIMUM,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Backoff:
    """Call the result with a coroutine function: it is awaited again after each error `retry_on`
    accepts; an error it refuses, or any error once `should_stop()` is true, is raised."""
    settings = _settings(what, log, retry_on, should_stop, initial, maximum)
    return Backoff(AsyncRetrying(**settings) if sleep is None else AsyncRetrying(sleep=sleep, **settings))


def retrying_blocking(
    *,
    what: str,
    log: logging.Logger,
    retry_on: Callable[[BaseException], bool] = lambda _exc: True,
    initial: float = INITIAL,
    maximum: float = MAXIMUM,
    tries: int | None = None,
) -> Retrying:
    """`retrying` for code outside an event loop (the CLI before a service starts, an operator's
    request); with `tries`, the last error is raised after that many calls."""
    settings = _settings(what, log, retry_on, None, initial, maximum)
    if tries is not None:
        settings["stop"] = stop_after_attempt(tries)
    return Retrying(**settings)


def poll_until(check: Callable[[], bool], *, timeout: float, interval: float) -> bool:
    """Call `check()` every `interval` seconds until it returns true (then True) or `timeout`
    seconds have passed (then False); an error `check()` raises ends the wait with that error."""
    policy = Retrying(
        wait=wait_fixed(interval),
        stop=stop_after_delay(timeout),
        retry=retry_if_result(lambda done: not done),
        retry_error_callback=lambda _state: False,
    )
    return bool(policy(check))


async def wait_until(check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float) -> bool:
    """`poll_until` for a coroutine function, on the event loop."""
    policy = AsyncRetrying(
        wait=wait_fixed(interval),
        stop=stop_after_delay(timeout),
        retry=retry_if_result(lambda done: not done),
        retry_error_callback=lambda _state: False,
    )
    return bool(await policy(check))
