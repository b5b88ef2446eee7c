"""`fcl trainer`: a trainer worker wired to PostgreSQL, Kafka and training children.

Beside the loop run its side tasks: the outbox relay (a Kafka producer that connects in the
background) and the LISTEN connection that wakes the relay (outbox rows to publish) and the loop
(jobs to claim). They are watched: when one dies the worker stops and the process exits
non-zero, instead of training on without publishing. SIGTERM and SIGINT stop claiming and drain
(`worker.loop`). Shutdown always finishes its cleanup: each step runs even when an earlier one
failed (the outbox is flushed, the relay and producer stopped, the heartbeat row removed, the
database closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fcl.contract import logs, tracing
from fcl.contract.probes import Probes
from fcl.contract.settings import Settings, get_settings
from fcl.messaging.admin import ensure_topics
from fcl.messaging.producer import BackgroundProducer, is_record_error
from fcl.storage.artifacts import ArtifactStore, S3Access
from fcl.storage.db import Database
from fcl.storage.errors import StorageError
from fcl.storage.migrate import at_head
from fcl.storage.notifications import QUEUED_CHANNEL, Notifications
from fcl.storage.outbox import OutboxRelay
from fcl.storage.retry import RetryPolicy
from fcl.storage.stores import WorkerStore
from fcl.worker import live, retention
from fcl.worker.job import WorkerConfig
from fcl.worker.loop import TrainerWorker
from fcl.worker.retention import RetentionPolicy
from fcl.worker.runner import ProcessRunner, math_threads

log = logging.getLogger("fcl.trainer")


def config_from(settings: Settings, worker_id: str | None = None) -> WorkerConfig:
    return WorkerConfig(
        worker_id=worker_id or f"{socket.gethostname()}:{os.getpid()}",
        database_url=settings.database_url,
        artifact_url=settings.artifact_location,
        s3=S3Access.from_settings(settings),
        concurrency=settings.trainer_concurrency,
        caps=settings.trainer_caps,
        lease=timedelta(seconds=settings.lease_seconds),
        heartbeat_seconds=settings.heartbeat_seconds,
        drain_seconds=settings.drain_seconds,
        timeouts=settings.trainer_timeouts,
        hyperparameters=settings.trainer_hyperparameters,
        device=settings.trainer_device,
        windows=settings.windows(),
        drift_max_psi=settings.drift_max_psi,
        champion_datasets=settings.champion_datasets,
        retry=RetryPolicy(base_seconds=settings.retry_base_seconds, max_seconds=settings.retry_max_seconds),
        retrain_sweep_seconds=settings.retrain_sweep_seconds,
        default_priority=settings.default_priority,
    )


async def serve(settings: Settings) -> int:
    """Run a worker until SIGTERM/SIGINT (0) or until a side task dies (1)."""
    config = config_from(settings)
    await ensure_topics(settings)
    runner = ProcessRunner(threads=math_threads(config.concurrency))
    await asyncio.to_thread(runner.warm_up)
    # No pre-ping round trip per transaction: every database call here is retried or its failure
    # handled, and a broken pooled connection is replaced on its first error.
    db = Database(settings.database_url, pool_size=4, pre_ping=False)
    queue = WorkerStore(db)
    notifications = Notifications(settings.database_url)
    producer = BackgroundProducer(settings)
    relay = OutboxRelay.from_settings(
        settings, db, producer.send, notifications=notifications, is_record_error=is_record_error
    )
    worker = TrainerWorker(queue, runner, config)
    notifications.subscribe(QUEUED_CHANNEL, lambda _payload: worker.wake())
    notifications.on_connect(worker.wake)  # a job queued while the listener was down
    exit_code = 0
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(_step, "close the database", db.close)
        producer_task = producer.start()
        cleanup.push_async_callback(_step, "stop the Kafka producer", producer.stop)
        notifications.start()
        cleanup.push_async_callback(_step, "stop the notification listener", notifications.stop)
        # a stale heartbeat row would only age out of /training-status
        cleanup.push_async_callback(_step, "remove this worker's heartbeat", lambda: queue.leave(config.worker_id))
        relay_task = relay.start()
        cleanup.push_async_callback(_step, "stop the outbox relay", relay.stop)
        cleanup.push_async_callback(_step, "flush the outbox", lambda: _flush(queue, relay_task))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        if settings.metrics_port is not None:
            probes = _probes(settings, producer)
            port = await probes.open()
            probes.start()
            cleanup.push_async_callback(_step, "stop the probe server", probes.stop)
            print(f"fcl trainer: /metrics, /livez, /readyz on http://{settings.metrics_host}:{port}", flush=True)
        print(f"trainer worker {config.worker_id} ready", flush=True)
        worker_task = worker.start()
        side = {
            relay_task: "outbox relay",
            notifications.task: "notification listener",
            producer_task: "Kafka producer",
        }
        if settings.retention_sweep_seconds > 0:
            retention_task = asyncio.create_task(_retain(settings, queue), name="fcl-retention")
            cleanup.push_async_callback(_step, "stop the retention sweep", lambda: _cancel(retention_task))
            side[retention_task] = "retention sweep"
        if settings.live_eval_seconds > 0:
            live_task = asyncio.create_task(
                live.run(queue, every=settings.live_eval_seconds, triggers=live.Triggers.from_settings(settings)),
                name="fcl-live",
            )
            cleanup.push_async_callback(_step, "stop the live evaluation", lambda: _cancel(live_task))
            side[live_task] = "live evaluation"
        done, _ = await asyncio.wait(
            {worker_task, *[t for t in side if t is not None]}, return_when=asyncio.FIRST_COMPLETED
        )
        if worker_task not in done:
            dead = next(t for t in done if t in side)
            reason = dead.exception() if not dead.cancelled() else "cancelled"
            log.error("the %s died (%r): stopping this worker", side[dead], reason)
            exit_code = 1
        await worker.stop()  # the drain; raises what ended the loop, if an error did
    return exit_code


def _probes(settings: Settings, producer: BackgroundProducer) -> Probes:
    store = ArtifactStore.from_settings(settings)
    return Probes(
        settings.metrics_host,
        settings.metrics_port or 0,
        checks={
            "database": functools.partial(at_head, settings.database_url),
            "broker": producer.answers,
            "artifact store": store.answers,
        },
    )


async def _retain(settings: Settings, db: WorkerStore) -> None:
    """The retention sweep, every `retention_sweep_seconds` (the first a minute after start); a
    sweep that fails (database or store unreachable) is logged and tried again next time."""
    store = ArtifactStore.from_settings(settings)
    policy = RetentionPolicy(
        keep_versions=settings.retention_keep_versions,
        keep_days=settings.retention_keep_days,
        dead_letter_days=settings.dead_letter_retention_days,
        sample_days=settings.sample_retention_days,
        windows=settings.windows(),
        partition_seconds=settings.sample_partition_seconds,
        # 9 at least, and always two sweeps' worth: no row waits in the default partition
        partitions_ahead=max(
            9, min(1000, math.ceil(2 * settings.retention_sweep_seconds / settings.sample_partition_seconds) + 1)
        ),
    )
    await asyncio.sleep(min(60.0, settings.retention_sweep_seconds))
    while True:
        try:
            result = await retention.sweep(db, store, policy)
            if (
                result.marked
                or result.artifacts_removed
                or result.failed
                or result.temporaries_removed
                or result.sample_days_dropped
                or result.sample_batches_forgotten
                or result.predictions_forgotten
            ):
                log.info(
                    "retention: removed versions %s, %d artifact(s) deleted, %d left for the next sweep, "
                    "%d temporary upload(s) removed, sample partitions dropped %s, %d samples-event id(s) forgotten, "
                    "%d prediction(s) and waiting outcome(s) forgotten",
                    result.marked,
                    result.artifacts_removed,
                    len(result.failed),
                    result.temporaries_removed,
                    result.sample_days_dropped,
                    result.sample_batches_forgotten,
                    result.predictions_forgotten,
                )
        except StorageError as exc:
            log.warning("retention sweep failed: %s", exc)
        await asyncio.sleep(settings.retention_sweep_seconds)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _step(what: str, action: Callable[[], Awaitable[object]]) -> None:
    """One cleanup step: its failure is logged and the next step still runs."""
    try:
        await action()
    except Exception as exc:  # noqa: BLE001 - logged; the rest of the cleanup must run
        log.warning("shutdown: could not %s: %s: %s", what, type(exc).__name__, exc)


async def _flush(queue: WorkerStore, relay_task: asyncio.Task[None], seconds: float = 5.0) -> None:
    """Give the relay a moment to publish what the last transactions wrote."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not relay_task.done() and asyncio.get_running_loop().time() < deadline:
        if await queue.unpublished_events() == 0:
            return
        await asyncio.sleep(0.1)


def main() -> int:
    settings = get_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)
    tracing.setup("trainer")
    try:
        return asyncio.run(serve(settings))
    finally:
        tracing.shutdown()
