"""One start/stop contract for fcl's long-running parts (the notification listener, the background
producer, the outbox relay, the champion watcher, the trainer worker's loop), after mode.Service's
but small enough to read in a minute:

- `start()` runs `run()` in a task of its own, once (a second call returns the same task);
- `stop()` asks it to end (`stopping` turns true and `sleep()` returns at once), waits up to
  `grace` seconds for `run()` to return, cancels it otherwise, then calls `stopped()` to release
  what the service holds (even when the task ended with an error, which `stop()` then raises); a
  service that was never started only runs `stopped()`;
- `request_stop()` only asks (safe from a signal handler or any callback); `run()` ends in its
  own time;
- `async with service:` is `start()` and `stop()`;
- `task` is the running task, for `contract.lifeline.exit_when_done`: a service whose task ends
  while the process is not stopping ends the process.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from types import TracebackType
from typing import ClassVar, Self


class Service(abc.ABC):
    name: ClassVar[str] = "service"  # the task's name is fcl-<name>
    grace: float = 15.0  # seconds `stop()` lets `run()` end by itself; 0 cancels at once

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @abc.abstractmethod
    async def run(self) -> None:
        """The service's work, until `stopping` (or for ever, when `grace` is 0)."""

    async def stopped(self) -> None:  # noqa: B027 - a hook; most services hold nothing
        """Release what the service holds, after `run()` ended (override; runs once per stop)."""

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=f"fcl-{self.name}")
        return self._task

    def request_stop(self) -> None:
        """Ask `run()` to end (`stopping` turns true), without waiting for it."""
        self._stopping.set()

    async def wait_stopping(self) -> None:
        """Until `stopping` turns true."""
        await self._stopping.wait()

    async def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less when `stop()` is called meanwhile; whether it was."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self.stopping

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                if self.grace > 0 and not task.done():
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                        await asyncio.wait_for(asyncio.shield(task), self.grace)
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # raises what ended the task, if an error did
        finally:
            await self.stopped()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
