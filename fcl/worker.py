"""`fcl trainer`: a trainer worker. Several share one PostgreSQL queue, on one machine or many.

The loop claims the best waiting job in one short transaction (with its `in_progress` status
event), then trains it in a CHILD process so this process keeps renewing the lease, publishing
progress, noticing cancellation, and can kill a hung or runaway trainer at its model type's
timeout. No transaction stays open while a model trains.

Every write of a result checks the lease token. On success ONE transaction records the training
event, the model version, the validation checks, the champion move when the gate passed
(compare-and-swap against the champion the candidate was validated against; if it moved, the
candidate is validated again), the dataset counter, and the outbox rows of the `completed`,
validation and model-versions events. Failures retry with exponential backoff and jitter up to the
model type's attempts; errors that retrying cannot fix fail at once. SIGTERM stops claiming, gives
running jobs `drain_seconds`, then stops them and puts them back without counting the attempt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import random
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fcl.settings import Settings
from storage.db import Database
from storage.entities import ChampionMove, ChampionReason, Direction, Job, JobStatus, NewModelVersion, ValidationCheck
from storage.repositories import (
    ChampionMoveConflict,
    ChampionRepository,
    DatasetRepository,
    ModelVersionRepository,
    OutboxRepository,
    QueueRepository,
    SampleRepository,
    TrainingEventRepository,
    ValidationRepository,
    WorkerRepository,
)
from streams.events import ModelVersionEvent, TrainingValidationEvent, job_status_event, rfc3339
from streams.topics import Topic

log = logging.getLogger("fcl.trainer")


class ChampionChanged(Exception):
    """The champion moved while the candidate was being validated against the old one."""


class JobStopped(Exception):
    """The child was stopped: `reason` is cancelled, lease_lost, released or timeout."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class TrainingFailed(Exception):
    def __init__(self, error_type: str, message: str, retriable: bool) -> None:
        super().__init__(message)
        self.error_type, self.message, self.retriable = error_type, message, retriable


# -- the child process ------------------------------------------------------------------------------
def _child_main(conn: Any, args: dict[str, Any]) -> None:
    """Runs in a spawned process: load the samples, train, judge, write the artifact, report."""
    try:
        from trainers.artifacts import ArtifactStore
        from trainers.base import Artifact, TrainingError, TrainRequest
        from trainers.manifest import build_manifest
        from trainers.registry import get_trainer

        async def load() -> list[dict[str, Any]]:
            db = Database(args["database_url"], pool_size=1)
            try:
                async with db.transaction() as s:
                    return await SampleRepository(s).load(args["dataset_id"], up_to=args["watermark"])
            finally:
                await db.close()

        samples = asyncio.run(load())
        trainer = get_trainer(args["model_type"])
        champion = Artifact(*args["champion"]) if args["champion"] else None
        last = [0.0, time.monotonic()]

        def progress(fraction: float) -> None:  # at most every 2 % or every second
            if fraction - last[0] >= 0.02 or fraction >= 1.0 or time.monotonic() - last[1] >= 1.0:
                last[0], last[1] = fraction, time.monotonic()
                conn.send(("progress", float(fraction)))

        started = time.perf_counter()
        try:
            result = trainer.train(
                TrainRequest(
                    samples=samples,
                    seed=args["seed"],
                    hyperparameters=args["hyperparameters"],
                    champion=champion,
                    progress=progress,
                    device=args["device"],
                )
            )
        except TrainingError as exc:
            conn.send(("error", {"type": type(exc).__name__, "message": str(exc), "retriable": exc.retriable}))
            return
        fit_seconds = time.perf_counter() - started
        verdict = trainer.gate.evaluate(result.metrics, result.baseline_metrics)
        store = ArtifactStore(Path(args["artifact_dir"]))
        path = store.path_for_job(
            args["model_type"], uuid.UUID(args["job_id"]), args["attempt"], result.artifact.format
        )
        stored = store.write_at(path, result.artifact)
        manifest = build_manifest(
            model_type=args["model_type"],
            seed=args["seed"],
            hyperparameters=result.hyperparameters,
            samples=samples,
            dataset_watermark=args["watermark"],
            info=result.info,
        )
        finite = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        baseline = (
            {k: v for k, v in result.baseline_metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            if result.baseline_metrics is not None
            else None
        )
        conn.send(
            (
                "result",
                {
                    "metrics": finite,
                    "baseline_metrics": baseline,
                    "checks": [c.as_dict() for c in verdict.checks],
                    "passed": verdict.passed,
                    "hyperparameters": result.hyperparameters,
                    "manifest": manifest,
                    "artifact": {
                        "path": str(stored.path),
                        "sha256": stored.sha256,
                        "size": stored.size,
                        "format": stored.format,
                    },
                    "fit_seconds": fit_seconds,
                    "sample_count": len(samples),
                },
            )
        )
    except BaseException as exc:  # noqa: BLE001 - everything the child hits is reported, never lost
        try:
            conn.send(("error", {"type": type(exc).__name__, "message": str(exc) or repr(exc), "retriable": True}))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


_PRELOAD = [
    "fcl.worker",
    "trainers.registry",
    "trainers.recommendation",
    "trainers.segmentation",
    "trainers.spending",
    "trainers.goal",
    "torch",
    "sklearn.ensemble",
    "sklearn.cluster",
    "skops.io",
]
_CONTEXT: Any = None


def _training_context() -> Any:
    """Training children come from a fork server that has already imported torch, scikit-learn
    and the trainers: a child starts in tens of milliseconds instead of seconds, and still starts
    clean (no threads, no event loop, no database connections inherited from this process)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _CONTEXT = ctx
    return _CONTEXT


def _warm_up_training_context() -> None:
    """Start the fork server now (it imports torch and scikit-learn once), not on the first job."""
    from multiprocessing import forkserver

    _training_context()
    forkserver.ensure_running()


# -- the worker -------------------------------------------------------------------------------------
@dataclass
class Running:
    job: Job
    task: asyncio.Task[None]


class TrainerWorker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None, poll_seconds: float = 0.5) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        # No pre-ping round trip per transaction: every database call here is retried or its
        # failure handled, and a broken pooled connection is replaced on its first error.
        self.db = Database(settings.database_url, pool_size=4, pre_ping=False)
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.running: dict[uuid.UUID, Running] = {}
        self.stopping = asyncio.Event()
        self.releasing = False
        self._relay: Any = None

    # status events -------------------------------------------------------------------------------
    _status = staticmethod(job_status_event)

    def _requeued_events(self, job: Job, merged: Job | None, error: tuple[str, str] | None, message: str) -> list[Any]:
        if merged is not None:
            return [self._status(job, "cancelled", message=f"merged into waiting job {merged.id}", error=error)]
        if job.status is JobStatus.QUEUED:
            return [self._status(job, "queued", attempt=job.attempts + 1, message=message, error=error)]
        return [self._status(job, job.status.value, message=message, error=error)]

    def _wake_relay(self) -> None:
        if self._relay is not None:
            self._relay.wake()

    # the loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.admin import ensure_topics
        from streams.outbox import OutboxRelay

        await ensure_topics(self.settings)
        await asyncio.to_thread(_warm_up_training_context)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()

        async def send(topic: str, key: bytes | None, value: bytes) -> Any:
            return await producer.send(topic, value, key=key)

        self._relay = OutboxRelay(self.db, send, topic_prefix=self.settings.topic_prefix)
        relay_stop = asyncio.Event()
        relay_task = asyncio.create_task(self._relay.run(should_stop=relay_stop.is_set))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info("trainer worker %s ready (concurrency %d)", self.worker_id, self.settings.trainer_concurrency)
        print(f"trainer worker {self.worker_id} ready", flush=True)
        last_expiry = last_beat = 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                    last_beat = time.monotonic()
                    await self._announce()
                if time.monotonic() - last_expiry > min(5.0, self.settings.lease_seconds / 2):
                    last_expiry = time.monotonic()
                    await self._expire_leases()
                claimed = None
                if len(self.running) < self.settings.trainer_concurrency:
                    claimed = await self._claim()
                    if claimed is not None:
                        last_beat = 0.0  # announce the new job at once
                if claimed is None:
                    try:
                        await asyncio.wait_for(self.stopping.wait(), self.poll_seconds)
                    except TimeoutError:
                        pass
            await self._drain()
        finally:
            # let the relay publish what the last transactions wrote, then stop it
            for _ in range(50):
                async with self.db.transaction() as s:
                    if not await OutboxRepository(s).pending_encoded(limit=1):
                        break
                self._relay.wake()
                await asyncio.sleep(0.1)
            relay_stop.set()
            self._relay.wake()
            await asyncio.wait_for(relay_task, 10)
            try:
                async with self.db.transaction() as s:
                    await WorkerRepository(s).remove(self.worker_id)
            except Exception as exc:  # noqa: BLE001 - a stale row just ages out of /training-status
                log.warning("could not remove this worker's heartbeat: %s", exc)
            await producer.stop()
            await self.db.close()

    async def _announce(self) -> None:
        """The worker's heartbeat row (who runs what), shown by `/training-status`."""
        try:
            async with self.db.transaction() as s:
                await WorkerRepository(s).beat(
                    worker_id=self.worker_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    current_job_ids=list(self.running),
                    info={
                        "concurrency": self.settings.trainer_concurrency,
                        "heartbeat_seconds": self.settings.heartbeat_seconds,
                        "stopping": self.stopping.is_set(),
                    },
                )
        except Exception as exc:  # noqa: BLE001 - the loop outlives database outages
            log.warning("worker heartbeat failed: %s: %s", type(exc).__name__, exc)

    async def _drain(self) -> None:
        if self.running:
            log.info("stopping: %d running job(s) get %.0fs to finish", len(self.running), self.settings.drain_seconds)
            await asyncio.wait([r.task for r in self.running.values()], timeout=self.settings.drain_seconds)
            if self.running:
                self.releasing = True
                await asyncio.wait([r.task for r in self.running.values()], timeout=60)

    async def _claim(self) -> Job | None:
        try:
            async with self.db.transaction() as s:
                job = await QueueRepository(s).claim(
                    worker=self.worker_id, lease=self.lease, caps=self.settings.trainer_caps or None
                )
                if job is not None:
                    await OutboxRepository(s).add_many(
                        [self._status(job, "in_progress", progress=0.0, message=f"claimed by {self.worker_id}")]
                    )
        except Exception as exc:  # noqa: BLE001 - the loop outlives database outages
            log.warning("claim failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(1.0)
            return None
        if job is not None:
            self._wake_relay()
            task = asyncio.create_task(self._run_job(job))
            self.running[job.id] = Running(job, task)
            task.add_done_callback(lambda _t, job_id=job.id: self.running.pop(job_id, None))
        return job

    async def _expire_leases(self) -> None:
        try:
            async with self.db.transaction() as s:
                expired = await QueueRepository(s).expire_leases()
                events = []
                for job, merged in expired:
                    await TrainingEventRepository(s).add(
                        job_id=job.id,
                        attempt=max(1, job.attempts),
                        dataset_id=job.dataset_id,
                        model_type=job.model_type,
                        status="abandoned",
                        worker=self.worker_id,
                        started_at=job.started_at or job.updated_at,
                        duration_seconds=0.0,
                        error_type="LeaseExpired",
                        error_message=job.error_message,
                    )
                    events += self._requeued_events(
                        job, merged, ("LeaseExpired", job.error_message or ""), "lease expired; back in the queue"
                    )
                await OutboxRepository(s).add_many(events)
        except Exception as exc:  # noqa: BLE001
            log.warning("lease expiry failed: %s: %s", type(exc).__name__, exc)
            return
        if expired:
            log.warning("reclaimed %d job(s) whose worker stopped renewing its lease", len(expired))
            self._wake_relay()

    # one job ------------------------------------------------------------------------------------
    async def _run_job(self, job: Job) -> None:
        started_at = datetime.now(UTC)
        started = time.monotonic()
        token = job.lease_token
        assert token is not None
        try:
            for _ in range(10):
                champion_move, champion_artifact, unreadable = await self._champion(job.model_type)
                async with self.db.transaction() as s:
                    watermark = await SampleRepository(s).watermark(job.dataset_id)
                result = await self._train_in_child(job, token, watermark, champion_artifact)
                result["champion_unreadable"] = unreadable
                try:
                    await self._record_success(
                        job, token, result, watermark, champion_move, started_at, time.monotonic() - started
                    )
                    return
                except ChampionChanged:
                    log.info("job %s: the champion moved during validation; validating again", job.id)
            raise TrainingFailed("ChampionChanged", "the champion kept moving during validation", True)
        except JobStopped as stop:
            await self._record_stop(job, token, stop, started_at, time.monotonic() - started)
        except TrainingFailed as failure:
            await self._record_failure(job, token, failure, started_at, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - a bug or an outage: the job is retried, never lost
            log.exception("job %s failed in the worker", job.id)
            await self._record_failure(
                job, token, TrainingFailed(type(exc).__name__, str(exc), True), started_at, time.monotonic() - started
            )

    async def _champion(self, model_type: str) -> tuple[ChampionMove | None, tuple[bytes, str] | None, str | None]:
        """The current champion, its artifact's bytes (checksum verified) and, when that artifact
        cannot be read (deleted, moved, corrupt), why. A champion that cannot be loaded cannot be
        compared: the candidate is then judged on its fixed bounds alone, so one lost file does
        not stop its model type from ever training again."""
        from trainers.artifacts import ArtifactError, ArtifactStore, StoredArtifact

        async with self.db.transaction() as s:
            move = await ChampionRepository(s).current(model_type)
            version = await ModelVersionRepository(s).get(model_type, move.version) if move else None
        if version is None:
            return move, None, None
        stored = StoredArtifact(
            path=Path(version.artifact_path),
            sha256=version.artifact_sha256,
            size=version.artifact_size,
            format=version.artifact_format,
        )
        try:
            artifact = await asyncio.to_thread(ArtifactStore(self.settings.artifact_dir).read, stored)
        except (ArtifactError, OSError) as exc:
            reason = f"the artifact of champion {model_type} v{version.version} cannot be read ({exc})"
            log.warning("%s; candidates are judged on fixed bounds only", reason)
            return move, None, reason
        return move, (artifact.data, artifact.format), None

    async def _train_in_child(
        self, job: Job, token: uuid.UUID, watermark: int, champion: tuple[bytes, str] | None
    ) -> dict[str, Any]:
        from trainers.base import stable_bucket

        ctx = _training_context()
        receiver, sender = ctx.Pipe(duplex=False)
        args = {
            "database_url": self.settings.database_url,
            "dataset_id": job.dataset_id,
            "watermark": watermark,
            "model_type": job.model_type,
            "seed": stable_bucket(str(job.id), 2**31),
            "hyperparameters": self.settings.trainer_hyperparameters.get(job.model_type, {}),
            "champion": champion,
            "artifact_dir": str(self.settings.artifact_dir),
            "job_id": str(job.id),
            "attempt": job.attempts,
            "device": self.settings.trainer_device,
        }
        proc = ctx.Process(target=_child_main, args=(sender, args), name=f"fcl-train-{job.id}", daemon=True)
        proc.start()
        sender.close()
        deadline = time.monotonic() + self.settings.timeout_for(job.model_type)
        drain_deadline: float | None = None
        next_beat = time.monotonic() + self.settings.heartbeat_seconds
        progress, published = 0.0, 0.0
        try:
            while True:
                if await asyncio.to_thread(receiver.poll, 0.2):
                    try:
                        kind, payload = receiver.recv()
                    except EOFError:
                        kind, payload = "exit", None
                    if kind == "progress":
                        progress = payload
                        continue
                    if kind == "result":
                        return payload  # type: ignore[no-any-return]
                    if kind == "error":
                        raise TrainingFailed(payload["type"], payload["message"], payload["retriable"])
                if not proc.is_alive() and not receiver.poll():
                    raise TrainingFailed(
                        "TrainerExited", f"the training process exited with code {proc.exitcode} without a result", True
                    )
                now = time.monotonic()
                if now > deadline:
                    raise JobStopped(
                        "timeout", f"training took longer than {self.settings.timeout_for(job.model_type):.0f}s"
                    )
                if self.stopping.is_set() and drain_deadline is None:
                    drain_deadline = now + self.settings.drain_seconds
                if self.releasing or (drain_deadline is not None and now > drain_deadline):
                    raise JobStopped("released", "worker shutting down")
                if now >= next_beat:
                    next_beat = now + self.settings.heartbeat_seconds
                    owned, cancel = await self._heartbeat(job, token, progress, publish=progress - published >= 0.1)
                    if progress - published >= 0.1:
                        published = progress
                    if not owned:
                        raise JobStopped("lease_lost", "the lease was lost to another worker")
                    if cancel:
                        raise JobStopped("cancelled", "cancelled by request")
        finally:
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 5)
                if proc.is_alive():
                    proc.kill()
                    await asyncio.to_thread(proc.join, 5)
            receiver.close()

    async def _heartbeat(self, job: Job, token: uuid.UUID, progress: float, *, publish: bool) -> tuple[bool, bool]:
        try:
            async with self.db.transaction() as s:
                owned, cancel = await QueueRepository(s).heartbeat(job.id, token, lease=self.lease, progress=progress)
                if owned and publish and not cancel:
                    await OutboxRepository(s).add_many(
                        [self._status(job, "in_progress", progress=round(progress, 3), message="training")]
                    )
        except Exception as exc:  # noqa: BLE001 - a missed beat is not a lost lease; the next one may pass
            log.warning("heartbeat for job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            return True, False
        if publish:
            self._wake_relay()
        return owned, cancel

    async def _record_success(
        self,
        job: Job,
        token: uuid.UUID,
        result: dict[str, Any],
        watermark: int,
        validated_against: ChampionMove | None,
        started_at: datetime,
        duration: float,
    ) -> None:
        checks = [
            ValidationCheck(
                metric=c["metric"],
                value=c["value"],
                baseline=c["baseline"],
                threshold=c["threshold"],
                direction=Direction(c["direction"]),
                passed=c["passed"],
                kind=c["kind"],
            )
            for c in result["checks"]
        ]
        manifest = result["manifest"]
        try:
            async with self.db.transaction() as s:
                if not await QueueRepository(s).owns(job.id, token):
                    raise JobStopped("lease_lost", "the lease was lost before the result was recorded")
                champions = ChampionRepository(s)
                current = await champions.current(job.model_type)
                if (current.seq if current else 0) != (validated_against.seq if validated_against else 0):
                    raise ChampionChanged()
                events = TrainingEventRepository(s)
                training_event_id = await events.add(
                    job_id=job.id,
                    attempt=job.attempts,
                    dataset_id=job.dataset_id,
                    model_type=job.model_type,
                    status="completed",
                    worker=self.worker_id,
                    started_at=started_at,
                    duration_seconds=duration,
                    fit_seconds=result["fit_seconds"],
                    sample_count=result["sample_count"],
                    dataset_watermark=watermark,
                    metrics=result["metrics"],
                )
                artifact = result["artifact"]
                version = await ModelVersionRepository(s).add(
                    NewModelVersion(
                        model_type=job.model_type,
                        training_event_id=training_event_id,
                        job_id=job.id,
                        dataset_id=job.dataset_id,
                        parent_version=current.version if current else None,
                        artifact_path=artifact["path"],
                        artifact_sha256=artifact["sha256"],
                        artifact_size=artifact["size"],
                        artifact_format=artifact["format"],
                        metrics=result["metrics"],
                        hyperparameters=result["hyperparameters"],
                        dataset_watermark=watermark,
                        dataset_hash=manifest["dataset_hash"],
                        seed=manifest["seed"],
                        library_versions=manifest["library_versions"],
                        code_version=manifest["code_version"],
                    )
                )
                await ValidationRepository(s).add(
                    training_event_id=training_event_id,
                    model_type=job.model_type,
                    candidate_version=version.version,
                    baseline_version=current.version if current else None,
                    checks=checks,
                )
                promoted = False
                outbox: list[Any] = []
                if result["passed"]:
                    move = await champions.move(
                        model_type=job.model_type,
                        version=version.version,
                        expected=current,
                        reason=ChampionReason.VALIDATED,
                    )
                    promoted = True
                    outbox.append(
                        (
                            Topic.MODEL_VERSIONS,
                            job.model_type,
                            ModelVersionEvent(
                                event_id=str(move.event_id),
                                model_type=job.model_type,
                                version=version.version,
                                previous_version=current.version if current else None,
                                reason="validated",
                                occurred_at=rfc3339(),
                            ).model_dump(mode="json"),
                        )
                    )
                await events.set_version(
                    training_event_id,
                    model_version=version.version,
                    validation_passed=result["passed"],
                    promoted=promoted,
                )
                await DatasetRepository(s).consume_up_to(job.dataset_id, watermark)
                done = await QueueRepository(s).complete(job.id, token, model_version=version.version)
                assert done is not None
                validation = TrainingValidationEvent(
                    event_id=str(uuid.uuid4()),
                    job_id=str(job.id),
                    training_event_id=str(training_event_id),
                    model_type=job.model_type,
                    candidate_version=version.version,
                    baseline_version=current.version if current else None,
                    metrics=result["metrics"],
                    baseline_metrics=result["baseline_metrics"],
                    checks=[{k: v for k, v in c.items() if k != "kind"} for c in result["checks"]],
                    passed=result["passed"],
                    promoted=promoted,
                    occurred_at=rfc3339(),
                )
                failed = ", ".join(f"{c.metric} ({c.kind})" for c in checks if not c.passed)
                verdict = "promoted to champion" if promoted else f"not promoted: {failed or 'no checks'}"
                if result.get("champion_unreadable"):
                    verdict += f"; judged on fixed bounds only: {result['champion_unreadable']}"
                outbox = [
                    self._status(
                        done,
                        "completed",
                        progress=1.0,
                        message=f"version {version.version} {verdict}",
                        training_event_id=training_event_id,
                        model_version=version.version,
                    ),
                    (Topic.TRAINING_VALIDATION, str(job.id), validation.model_dump(mode="json")),
                    *outbox,
                ]
                await OutboxRepository(s).add_many(outbox)
        except ChampionMoveConflict:
            raise ChampionChanged() from None
        self._wake_relay()
        log.info("job %s: %s version %d, %s", job.id, job.model_type, version.version, verdict)

    def _retry_in(self, attempt: int) -> timedelta:
        base = min(self.settings.retry_max_seconds, self.settings.retry_base_seconds * 2 ** max(0, attempt - 1))
        return timedelta(seconds=base * (0.5 + random.random() / 2))  # "equal jitter"

    async def _record_failure(
        self, job: Job, token: uuid.UUID, failure: TrainingFailed, started_at: datetime, duration: float
    ) -> None:
        retry = self._retry_in(job.attempts) if failure.retriable and job.attempts < job.max_attempts else None
        error = (failure.error_type, failure.message)
        for _ in range(10):  # the database may be down: keep the outcome until it is recorded
            try:
                async with self.db.transaction() as s:
                    outcome = await QueueRepository(s).fail(
                        job.id, token, error_type=failure.error_type, message=failure.message, retry_in=retry
                    )
                    if outcome is None:
                        return  # another worker holds it now
                    after, merged = outcome
                    await TrainingEventRepository(s).add(
                        job_id=job.id,
                        attempt=job.attempts,
                        dataset_id=job.dataset_id,
                        model_type=job.model_type,
                        status="failed",
                        worker=self.worker_id,
                        started_at=started_at,
                        duration_seconds=duration,
                        error_type=failure.error_type,
                        error_message=failure.message,
                    )
                    message = (
                        f"attempt {job.attempts} failed; retrying in {retry.total_seconds():.0f}s"
                        if retry
                        else "failed"
                    )
                    await OutboxRepository(s).add_many(self._requeued_events(after, merged, error, message))
                break
            except Exception as exc:  # noqa: BLE001
                log.warning("recording the failure of job %s: %s: %s; retrying", job.id, type(exc).__name__, exc)
                await asyncio.sleep(1.0)
        self._wake_relay()
        log.warning("job %s attempt %d: %s: %s", job.id, job.attempts, failure.error_type, failure.message)

    async def _record_stop(
        self, job: Job, token: uuid.UUID, stop: JobStopped, started_at: datetime, duration: float
    ) -> None:
        if stop.reason == "lease_lost":
            log.warning("job %s: lease lost; nothing recorded", job.id)
            return
        if stop.reason == "timeout":
            await self._record_failure(
                job, token, TrainingFailed("TrainingTimeout", str(stop), True), started_at, duration
            )
            return
        async with self.db.transaction() as s:
            q = QueueRepository(s)
            if stop.reason == "cancelled":
                done = await q.finish_cancelled(job.id, token)
                if done is None:
                    return
                events = [self._status(done, "cancelled", message="cancelled while training; no version recorded")]
                status = "cancelled"
            else:  # released on shutdown: back in the queue, the attempt not counted
                outcome = await q.release(job.id, token)
                if outcome is None:
                    return
                after, merged = outcome
                events = self._requeued_events(after, merged, None, "released: the worker is shutting down")
                status = "abandoned"
            await TrainingEventRepository(s).add(
                job_id=job.id,
                attempt=job.attempts,
                dataset_id=job.dataset_id,
                model_type=job.model_type,
                status=status,
                worker=self.worker_id,
                started_at=started_at,
                duration_seconds=duration,
                error_type="Cancelled" if status == "cancelled" else "Released",
                error_message=str(stop),
            )
            await OutboxRepository(s).add_many(events)
        self._wake_relay()
        log.info("job %s: %s", job.id, stop)


async def auto_trigger_ready(db: Database, settings: Settings) -> list[Any]:
    """Queue a job for each dataset whose counter reached its threshold, by the admission rules
    (a waiting job is joined, one follow-up while one runs). Returns the admissions."""
    from storage.entities import TriggerRequest
    from streams.ingest import admit_requests

    async with db.transaction() as s:
        ready = await DatasetRepository(s).ready()
        requests = [
            TriggerRequest(
                event_id=f"auto-trigger:{uuid.uuid4()}",
                dataset_id=d.dataset_id,
                model_type=d.model_type,
                priority=settings.default_priority,
                source="auto-trigger",
                max_attempts=settings.attempts_for(d.model_type),
            )
            for d in ready
        ]
        return await admit_requests(s, requests, settings)


def main() -> None:
    from fcl.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    asyncio.run(TrainerWorker(get_settings()).run())
