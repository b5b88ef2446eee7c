"""The trainer worker's loop, over a `storage.queue.WorkerQueue` and a `worker.runner.Runner`
(the unit tests give it in-memory fakes of both).

While not stopping it announces itself (a heartbeat row), reclaims jobs whose worker stopped
renewing its lease, queues a job for ready datasets that have none (`retrain_sweep_seconds`),
and claims the best waiting job whenever it has room (`concurrency`), each claimed job running
as a `worker.job.JobRun` task; with nothing to claim it waits until `wake()` (PostgreSQL's
`fcl_queued` notification, or one of its own jobs ending) or at most `poll_seconds`, the safety
net for a notification missed while the listener reconnects and for retries that come due.
It is a `contract.service.Service`: `request_stop()` (a signal) only sets an event. The loop then
stops claiming and gives running jobs `drain_seconds`; after that they are stopped and put back
without counting the attempt. `run()` returns once no job runs (`stop()` waits for that); a
database outage only delays the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable

from fcl.contract.service import Service
from fcl.storage.entities import Job
from fcl.storage.errors import StorageError
from fcl.storage.stores import WorkerBeat, WorkerQueue
from fcl.worker.job import JobRun, Shutdown, WorkerConfig
from fcl.worker.runner import Runner

log = logging.getLogger("fcl.trainer")
RELEASE_SECONDS = 60.0  # after the drain: for running trainings to be stopped and their jobs put back


class TrainerWorker(Service):
    name = "trainer-loop"

    def __init__(
        self,
        queue: WorkerQueue,
        runner: Runner,
        config: WorkerConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.queue = queue
        self.runner = runner
        self.config = config
        self.rng = rng or random.Random()
        self.clock = clock
        self.shutdown = Shutdown(stopping=self._stopping)  # what running jobs see of the stop
        # `stop()` waits for the drain, and then for the release of what is still running
        self.grace = config.drain_seconds + RELEASE_SECONDS + 15.0
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def wake(self) -> None:
        """Claim now instead of at the next poll (a job was queued; safe from any callback)."""
        self._wake.set()

    async def run(self) -> None:
        log.info("trainer worker %s ready (concurrency %d)", self.worker_id, self.config.concurrency)
        last_expiry = last_beat = last_sweep = -float("inf")
        while not self.stopping:
            now = self.clock()
            if self.config.retrain_sweep_seconds > 0 and now - last_sweep >= self.config.retrain_sweep_seconds:
                last_sweep = now
                await self._sweep()
            if now - last_beat >= self.config.heartbeat_seconds:
                last_beat = now
                await self._announce()
            if now - last_expiry > min(5.0, self.config.lease.total_seconds() / 2):
                last_expiry = now
                await self._expire_leases()
            self._wake.clear()  # before the claim: a job queued while it runs wakes the wait below
            claimed = await self._claim() if len(self.running) < self.config.concurrency else None
            if claimed is not None:
                last_beat = -float("inf")  # announce the new job at once
                continue
            await self._wait(self.config.poll_seconds)
        await self._drain()
        await self._announce()

    async def _wait(self, seconds: float) -> None:
        """Until stopping, woken, or `seconds` passed."""
        waits = [asyncio.ensure_future(self.wait_stopping()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _claim(self) -> Job | None:
        began = time.time_ns()
        try:
            job = await self.queue.claim(self.worker_id, lease=self.config.lease, caps=self.config.caps)
        except StorageError as exc:  # the loop outlives database outages
            log.warning("claim failed: %s", exc)
            await asyncio.sleep(1.0)
            return None
        if job is not None:
            run = JobRun(
                job,
                queue=self.queue,
                runner=self.runner,
                config=self.config,
                shutdown=self.shutdown,
                rng=self.rng,
                clock=self.clock,
                claimed_ns=(began, time.time_ns()),
            )
            task = asyncio.create_task(run.run(), name=f"fcl-job-{job.id}")
            self.running[job.id] = task
            task.add_done_callback(functools.partial(self._finished, job.id))
        return job

    def _finished(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        self.running.pop(job_id, None)
        self._wake.set()  # room for the next job: claim it now, not at the next poll
        if not task.cancelled() and task.exception() is not None:
            # JobRun records every outcome itself; this is a bug or a storage error that persisted.
            log.error(
                "job %s: its outcome could not be recorded: %r; its lease will expire and another worker will run it",
                job_id,
                task.exception(),
            )

    async def _announce(self) -> None:
        """The worker's heartbeat row (who runs what), shown by `/training-status`."""
        try:
            await self.queue.announce(
                WorkerBeat(
                    worker_id=self.worker_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    running=tuple(self.running),
                    info={
                        "concurrency": self.config.concurrency,
                        "heartbeat_seconds": self.config.heartbeat_seconds,
                        "stopping": self.stopping,
                    },
                )
            )
        except StorageError as exc:  # the loop outlives database outages
            log.warning("worker heartbeat failed: %s", exc)

    async def _expire_leases(self) -> None:
        try:
            expired = await self.queue.expire_leases(self.worker_id)
        except StorageError as exc:
            log.warning("lease expiry failed: %s", exc)
            return
        if expired:
            log.warning("reclaimed %d job(s) whose worker stopped renewing its lease", len(expired))

    async def _sweep(self) -> None:
        """Datasets ready with nothing waiting or running get a job (a missed crossing, a
        trigger lost upstream): continuous learning does not wait for the next event."""
        try:
            admitted = await self.queue.admit_ready(priority=self.config.default_priority)
        except StorageError as exc:
            log.warning("retrain sweep failed: %s", exc)
            return
        if admitted:
            log.info("retrain sweep: queued %d job(s) for ready datasets", admitted)

    async def _drain(self) -> None:
        if not self.running:
            return
        log.info("stopping: %d running job(s) get %.0fs to finish", len(self.running), self.config.drain_seconds)
        await asyncio.wait(list(self.running.values()), timeout=self.config.drain_seconds)
        if self.running:
            self.shutdown.releasing = True
            await asyncio.wait(list(self.running.values()), timeout=RELEASE_SECONDS)
