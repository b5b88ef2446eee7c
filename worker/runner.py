"""Training children: each training runs in a process of its own, so the worker keeps renewing its
lease, publishing progress and noticing cancellation, and can kill a hung or runaway trainer.

Children come from a fork server that has already imported torch, scikit-learn and the trainers:
a child starts in tens of milliseconds instead of seconds, and still starts clean (no threads, no
event loop, no database connections inherited from the worker)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from typing import Any, Protocol

from fcl.trainers.registry import trainer_modules
from fcl.worker.child import child_main
from fcl.worker.messages import ChildMessage, Failure, TrainingTask

_PRELOAD = [
    "fcl.worker.child",
    *trainer_modules(),
    "torch",
    "sklearn.ensemble",
    "sklearn.cluster",
    "skops.io",
    "fcl.worker.preloaded",  # last: freezes what the others made (see its docstring)
]


class TrainingProcess(Protocol):
    async def receive(self, timeout: float) -> ChildMessage | None:
        """The next message, None when none came within `timeout`; a `Failure` when the child
        exited without answering."""

    async def stop(self) -> None:
        """Make sure the child is gone (killed: it ignores SIGTERM, which is its parent's)."""


class Runner(Protocol):
    async def start(self, task: TrainingTask) -> TrainingProcess: ...


class _Child:
    """A training child, followed through its pipe: the pipe's end is the child's end. (Its
    `multiprocessing` handle asks the fork server, and a fork server stopped by a signal to the
    whole process group makes a child that still trains look exited.)"""

    def __init__(self, process: Any, receiver: Any) -> None:
        self.process = process
        self.receiver = receiver
        self.ended = False

    async def receive(self, timeout: float) -> ChildMessage | None:
        if self.ended:
            return self._exited()
        if not await asyncio.to_thread(self.receiver.poll, timeout):
            return None
        try:
            message: ChildMessage = self.receiver.recv()
            return message
        except (EOFError, OSError):
            self.ended = True
            await asyncio.to_thread(self.process.join, 1)
            return self._exited()

    def _exited(self) -> Failure:
        code = self.process.exitcode
        return Failure(
            type="TrainerExited",
            retriable=True,
            message=f"the training process exited{f' with code {code}' if code is not None else ''} without a result",
        )

    async def stop(self) -> None:
        try:
            if not self.ended and not self._closed() and self.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)  # it ignores SIGTERM, which is its parent's
                # Its pipe closes when it is gone (waited for off the event loop).
                await asyncio.to_thread(self._wait_gone, 10.0)
        finally:
            self.receiver.close()

    def _closed(self) -> bool:
        """Whether the child's end of the pipe is closed (it is gone, or going): then its pid is
        not signalled, since it may already belong to another process."""
        try:
            while self.receiver.poll(0):
                self.receiver.recv()
        except (EOFError, OSError):
            self.ended = True
        return self.ended

    def _wait_gone(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.receiver.poll(0.1):
                    self.receiver.recv()  # a last message, or EOFError once it is gone
            except (EOFError, OSError):
                break
        self.process.join(1)


def math_threads(concurrency: int, cores: int | None = None) -> int:
    """Math threads per training child: the cores shared among the `concurrency` children that
    may train at once, 1 to 4 each. (Each child taking every core made concurrent trainings spin
    their OpenMP threads against each other: 4 to 10 times slower on 2 cores.)"""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, min(4, cores // max(1, concurrency)))


class ProcessRunner:
    """Starts training children from the fork server (`warm_up` starts it ahead of the first job).
    The fork server, and so every child, runs `threads` math threads (OpenMP, MKL, OpenBLAS,
    torch, and scikit-learn's n_jobs=-1 through joblib's LOKY_MAX_CPU_COUNT), unless the process
    was started with `OMP_NUM_THREADS` set."""

    def __init__(self, threads: int | None = None) -> None:
        self._context: ForkServerContext | None = None
        self.threads = threads

    def _ctx(self) -> ForkServerContext:
        if self._context is None:
            if self.threads is not None and not os.environ.get("OMP_NUM_THREADS"):
                # read by the fork server's imports of torch and numpy, which it inherits
                for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LOKY_MAX_CPU_COUNT"):
                    os.environ[var] = str(self.threads)
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            self._context = ctx
        return self._context

    def warm_up(self) -> None:
        """Start the fork server and wait until it has imported torch, scikit-learn and the
        trainers (one no-op child from it): seconds, or far more on a first run that compiles their
        bytecode, spent before the worker says it is ready rather than while a job holds a lease."""
        ctx = self._ctx()
        forkserver.ensure_running()
        probe = ctx.Process(target=_ready, name="fcl-train-warm-up", daemon=True)
        probe.start()
        probe.join()

    async def start(self, task: TrainingTask) -> TrainingProcess:
        ctx = self._ctx()
        receiver, sender = ctx.Pipe(duplex=False)
        process = ctx.Process(target=child_main, args=(sender, task), name=f"fcl-train-{task.job_id}", daemon=True)
        try:
            await asyncio.to_thread(process.start)  # a fork from the fork server, off the event loop
        finally:
            sender.close()
        return _Child(process, receiver)


def _ready() -> None:
    """The warm-up child: it exists once the fork server is ready."""
