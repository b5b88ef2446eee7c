"""A process whose loop, agent or relay has died exits non-zero at once: a live process that does
nothing is worse than a dead one (its supervisor restarts a dead one; nobody notices the other).

`exit_when_done(task, what, stopping)` ends the process with status 1 when `task` finishes for
any reason — an exception, a cancellation, or a plain return — while `stopping()` is false."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fcl.lifeline")


def _die(what: str, why: str) -> None:
    log.critical("the %s died (%s): exiting with status 1", what, why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(1)  # at once: no cleanup that could hang; what was not acknowledged is redelivered


def exit_when_done(task: asyncio.Future[Any], what: str, stopping: Callable[[], bool]) -> None:
    def done(finished: asyncio.Future[Any]) -> None:
        if stopping():
            return
        if finished.cancelled():
            why = "cancelled"
        elif (exc := finished.exception()) is not None:
            why = f"{type(exc).__name__}: {exc}"
        else:
            why = "returned"
        _die(what, why)

    task.add_done_callback(done)


async def run_or_exit(work: Callable[[], Any], what: str, stopping: Callable[[], bool]) -> None:
    """Await `work()`; when it raises or returns while `stopping()` is false, exit with status 1."""
    try:
        await work()
    except asyncio.CancelledError:
        if not stopping():
            _die(what, "cancelled")
        raise
    except BaseException as exc:
        if not stopping():
            _die(what, f"{type(exc).__name__}: {exc}")
        raise
    if not stopping():
        _die(what, "returned")
