"""One claimed job, from its inputs to its recorded outcome.

The training runs in a child (`worker.runner`) while this coroutine renews the lease, publishes
progress, notices cancellation and kills a child that runs past its model type's timeout or past
the drain time of a stopping worker. A candidate is recorded in one transaction
(`WorkerQueue.complete`); when the champion moved while it was judged, the stored candidate is
judged again against the new champion (`Mode.EVALUATE`: no second fit), up to `MAX_ROUNDS` times.
A failure goes back to the queue by the retry policy (`storage.retry`); a stop is recorded as
what it was (cancelled, released, timed out); a lost lease records nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from fcl.contract import logs, tracing
from fcl.contract.enums import StopReason
from fcl.storage.artifacts import S3Access
from fcl.storage.entities import Champion, CompletedAttempt, EndedAttempt, Job, Lease, TrainingInputs, Transition
from fcl.storage.errors import ChampionMoved, LeaseLost, StorageError
from fcl.storage.retry import Attempt, AttemptError, RetryPolicy, retry_decision
from fcl.storage.stores import WorkerQueue
from fcl.trainers.base import stable_bucket
from fcl.worker import metrics
from fcl.worker.messages import Failure, Mode, Outcome, Progress, TrainingTask
from fcl.worker.runner import Runner

log = logging.getLogger("fcl.trainer")
MAX_ROUNDS = 10  # judgements of one candidate against a champion that keeps moving
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What a trainer worker needs of the settings (`WorkerConfig.from_settings`)."""

    worker_id: str
    database_url: str
    artifact_url: str
    s3: S3Access = field(default_factory=S3Access)
    concurrency: int = 1
    caps: Mapping[str, int] = field(default_factory=dict)
    lease: timedelta = timedelta(seconds=60)
    heartbeat_seconds: float = 5.0
    drain_seconds: float = 30.0
    timeouts: Mapping[str, float] = field(default_factory=dict)
    hyperparameters: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    device: str | None = None
    windows: Mapping[str, int] = field(default_factory=dict)  # model type -> train on the newest N samples
    drift_max_psi: float | None = None  # a limit on the verdict's drift (FCL_DRIFT_MAX_PSI); None: information only
    champion_datasets: Mapping[str, Sequence[str]] = field(default_factory=dict)  # FCL_CHAMPION_DATASETS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_seconds: float = 0.5
    # Every this many seconds, queue a job for each ready dataset with none waiting or running
    # (`JobQueue.admit_ready`); 0 turns the sweep off.
    retrain_sweep_seconds: float = 60.0
    default_priority: int = 5

    def timeout_for(self, model_type: str) -> float:
        return float(self.timeouts.get(model_type, 3600.0))


class JobStopped(Exception):
    """The training was stopped before it ended by itself."""

    def __init__(self, reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TrainingFailed(Exception):
    def __init__(self, error: AttemptError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Shutdown:
    """The worker's stop state, shared with its running jobs: `stopping` starts the drain,
    `releasing` ends it (running trainings are stopped and their jobs put back)."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    releasing: bool = False


class JobRun:
    def __init__(
        self,
        job: Job,
        *,
        queue: WorkerQueue,
        runner: Runner,
        config: WorkerConfig,
        shutdown: Shutdown,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        claimed_ns: tuple[int, int] | None = None,
    ) -> None:
        self.job = job
        self.claimed_ns = claimed_ns  # when the claim statement began and ended (time.time_ns)
        self.lease: Lease = job.lease
        self.queue = queue
        self.runner = runner
        self.config = config
        self.shutdown = shutdown
        self.rng = rng
        self.clock = clock
        self.progress = 0.0
        self._reaping: list[asyncio.Task[None]] = []  # stopping the children that answered

    async def run(self) -> None:
        """The attempt, as the `fcl.job` span of the trace its admission started (the job's
        trace context), with `fcl.claim`, `fcl.train` (its `fcl.fit` and `fcl.validate`) and
        `fcl.record` (the version, its checks and its events) inside."""
        job = self.job
        span = tracing.tracer().start_span(
            "fcl.job",
            context=tracing.context_of(job.trace_context),
            start_time=self.claimed_ns[0] if self.claimed_ns else None,
            attributes={
                "fcl.job_id": str(job.id),
                "fcl.dataset_id": job.dataset_id,
                "fcl.model_type": job.model_type,
                "fcl.attempt": job.attempts,
            },
        )
        if self.claimed_ns:
            claim = tracing.tracer().start_span(
                "fcl.claim", context=trace.set_span_in_context(span), start_time=self.claimed_ns[0]
            )
            claim.end(end_time=self.claimed_ns[1])
        with trace.use_span(span, end_on_exit=True):
            try:
                await self._run()
            finally:
                await asyncio.gather(*self._reaping)

    async def _run(self) -> None:
        started_at, started = datetime.now(UTC), self.clock()
        job = self.job
        logs.bind_job(job.id, job.dataset_id, job.model_type)  # this task's records name the job
        span = trace.get_current_span()
        try:
            inputs = await self.queue.inputs(job)
            task = self._task(inputs)
            outcome = await self._traced_supervise(task)
            for _ in range(MAX_ROUNDS):
                try:
                    with tracing.tracer().start_as_current_span("fcl.record"):
                        transition = await self._complete(
                            self._completed(outcome, task, inputs, started_at, self.clock() - started)
                        )
                except ChampionMoved:
                    log.info("job %s: the champion moved during validation; judging the candidate again", job.id)
                    inputs = await self.queue.inputs(job)
                    task = self._reevaluate(task, outcome, inputs)
                    outcome = await self._traced_supervise(task)
                    continue
                span.set_attributes(
                    {"fcl.model_version": transition.model_version or 0, "fcl.promoted": bool(transition.promoted)}
                )
                verdict = "promoted" if transition.promoted else "not promoted"
                log.info("job %s: %s version %s, %s", job.id, job.model_type, transition.model_version, verdict)
                metrics.VERDICTS.labels(job.model_type, verdict).inc()
                metrics.JOB_SECONDS.labels(job.model_type, "completed").observe(self.clock() - started)
                return
            raise TrainingFailed(
                AttemptError(
                    type="ChampionChanged", retriable=True, message="the champion kept moving during validation"
                )
            )
        except JobStopped as stop:
            span.set_attribute("fcl.stopped", stop.reason.value)
            await self._record_stop(stop, started_at, self.clock() - started)
            metrics.JOB_SECONDS.labels(job.model_type, "stopped").observe(self.clock() - started)
        except TrainingFailed as failure:
            span.set_status(StatusCode.ERROR, f"{failure.error.type}: {failure.error.message}"[:200])
            await self._record_failure(failure.error, started_at, self.clock() - started)
            metrics.JOB_SECONDS.labels(job.model_type, "failed").observe(self.clock() - started)
        except LeaseLost:
            log.warning("job %s: the lease was lost to another worker; nothing recorded", job.id)
        except Exception as exc:
            log.exception("job %s failed in the worker", job.id)
            await self._record_failure(
                AttemptError(type=type(exc).__name__, message=str(exc), retriable=True),
                started_at,
                self.clock() - started,
            )

    # -- the training ------------------------------------------------------------------------------
    async def _traced_supervise(self, task: TrainingTask) -> Outcome:
        """`_supervise` as the `fcl.train` span; the child's fit and validation as its `fcl.fit`
        and `fcl.validate` spans, timed by what the child measured."""
        tracer = tracing.tracer()
        with tracer.start_as_current_span("fcl.train", attributes={"fcl.mode": task.mode.value}) as train:
            began = time.time_ns()
            outcome = await self._supervise(task)
            ended = time.time_ns()
            if task.mode is Mode.FIT:
                fitted = min(ended, began + int(outcome.candidate.fit_seconds * 1e9))
                tracer.start_span("fcl.fit", start_time=began).end(end_time=fitted)
                validate = tracer.start_span("fcl.validate", start_time=fitted)
            else:
                validate = tracer.start_span("fcl.validate", start_time=began)
            validate.set_attribute("fcl.verdict", str(outcome.candidate.verdict))
            validate.end(end_time=ended)
            train.set_attribute("fcl.sample_count", outcome.candidate.sample_count)
            return outcome

    def _task(self, inputs: TrainingInputs) -> TrainingTask:
        job, champion = self.job, inputs.champion
        return TrainingTask(
            mode=Mode.FIT,
            database_url=self.config.database_url,
            artifact_url=self.config.artifact_url,
            s3=self.config.s3,
            job_id=job.id,
            attempt=job.attempts,
            model_type=job.model_type,
            dataset_id=job.dataset_id,
            watermark=inputs.watermark,
            window=self.config.windows.get(job.model_type),
            after=inputs.shape_from_id,
            shape_version=inputs.shape_version,
            seed=stable_bucket(str(job.id), 2**31),
            hyperparameters=dict(self.config.hyperparameters.get(job.model_type, {})),
            device=self.config.device,
            drift_max_psi=self.config.drift_max_psi,
            **_against(champion),
            may_promote=job.dataset_id in self.config.champion_datasets.get(job.model_type, [job.dataset_id]),
        )

    @staticmethod
    def _reevaluate(task: TrainingTask, outcome: Outcome, inputs: TrainingInputs) -> TrainingTask:
        """The candidate just judged, judged again against the champion now serving, on the same
        samples (the same watermark) and with the hyperparameters it was fitted with."""
        return replace(
            task,
            mode=Mode.EVALUATE,
            candidate=outcome.candidate.artifact,
            hyperparameters=outcome.candidate.hyperparameters,
            fit_metrics=outcome.fit_metrics,
            fit_seconds=outcome.candidate.fit_seconds,
            fit_info=outcome.fit_info,
            **_against(inputs.champion),
        )

    def _completed(
        self, outcome: Outcome, task: TrainingTask, inputs: TrainingInputs, started_at: datetime, duration: float
    ) -> CompletedAttempt:
        return CompletedAttempt(
            started_at=started_at,
            duration_seconds=duration,
            dataset_watermark=task.watermark,
            validated_against=inputs.champion.move.seq if inputs.champion else 0,
            candidate=outcome.candidate,
        )

    async def _supervise(self, task: TrainingTask) -> Outcome:
        """Run `task` in a child until it answers, renewing the lease meanwhile."""
        timeout = self.config.timeout_for(task.model_type)
        deadline = self.clock() + timeout
        drain_deadline: float | None = None
        next_beat = self.clock() + self.config.heartbeat_seconds
        published = 0.0
        child = await self.runner.start(task)
        answered = False
        try:
            while True:
                message = await child.receive(0.2)
                if isinstance(message, Progress):
                    self.progress = message.fraction
                elif isinstance(message, Outcome):
                    if message.peak_rss_bytes is not None:
                        metrics.CHILD_PEAK_RSS.labels(task.model_type).set(message.peak_rss_bytes)
                    answered = True
                    return message
                elif isinstance(message, Failure):
                    raise TrainingFailed(
                        AttemptError(type=message.type, message=message.message, retriable=message.retriable)
                    )
                now = self.clock()
                if now > deadline:
                    raise JobStopped(StopReason.TIMEOUT, f"training took longer than {timeout:.0f}s")
                if self.shutdown.stopping.is_set() and drain_deadline is None:
                    drain_deadline = now + self.config.drain_seconds
                if self.shutdown.releasing or (drain_deadline is not None and now > drain_deadline):
                    raise JobStopped(StopReason.RELEASED, "worker shutting down")
                if now >= next_beat:
                    next_beat = now + self.config.heartbeat_seconds
                    publish = self.progress - published >= 0.1
                    if await self._heartbeat(publish):
                        raise JobStopped(StopReason.CANCELLED, "cancelled by request")
                    if publish:
                        published = self.progress
        finally:
            if answered:
                # A child that answered exits by itself: it is reaped while its result is recorded
                # (`run` waits for it before the job's slot is free again).
                self._reaping.append(asyncio.create_task(child.stop()))
            else:
                await child.stop()

    async def _heartbeat(self, publish: bool) -> bool:
        """Renew the lease (and publish progress); whether a cancel was asked for."""
        try:
            job = await self.queue.heartbeat(
                self.lease, lease_for=self.config.lease, progress=self.progress, publish=publish
            )
        except LeaseLost:
            raise JobStopped(StopReason.LEASE_LOST, "the lease was lost to another worker") from None
        except StorageError as exc:  # a missed beat is not a lost lease; the next one may pass
            log.warning("heartbeat for job %s failed: %s", self.job.id, exc)
            return False
        return job.cancel_requested

    # -- recording what happened -------------------------------------------------------------------
    async def _record_failure(self, error: AttemptError, started_at: datetime, duration: float) -> None:
        job = self.job
        decision = retry_decision(
            error, Attempt(number=job.attempts, max_attempts=job.max_attempts), self.config.retry, self.rng
        )
        attempt = EndedAttempt(
            started_at=started_at, duration_seconds=duration, error_type=error.type, message=error.message
        )
        await self._keep_trying(lambda: self.queue.fail(self.lease, attempt, decision))
        log.warning("job %s attempt %d: %s: %s (%s)", job.id, job.attempts, error.type, error.message, decision.message)

    async def _record_stop(self, stop: JobStopped, started_at: datetime, duration: float) -> None:
        if stop.reason is StopReason.LEASE_LOST:
            log.warning("job %s: lease lost; nothing recorded", self.job.id)
            return
        if stop.reason is StopReason.TIMEOUT:
            await self._record_failure(
                AttemptError(type="TrainingTimeout", message=str(stop), retriable=True), started_at, duration
            )
            return
        cancelled = stop.reason is StopReason.CANCELLED
        attempt = EndedAttempt(
            started_at=started_at,
            duration_seconds=duration,
            error_type="Cancelled" if cancelled else "Released",
            message=str(stop),
        )
        if cancelled:
            await self._keep_trying(lambda: self.queue.finish_cancelled(self.lease, attempt))
        else:
            await self._keep_trying(lambda: self.queue.release(self.lease, attempt))
        log.info("job %s: %s", self.job.id, stop)

    async def _complete(self, attempt: CompletedAttempt) -> Transition:
        """The success transaction, retried on a transient database error for up to
        RECORD_PATIENCE seconds (a failover takes a minute or two; the training must not be thrown
        away for it). Safe: a retry after a commit whose answer was lost finds the lease gone and
        the job completed by this worker's attempt (`completed_by`), and takes that as done;
        nothing is written twice. The lease stays ours meanwhile: it is checked by its token, and
        no other worker can take it while the database is away."""
        deadline, first = self.clock() + RECORD_PATIENCE, True
        while True:
            try:
                return await self.queue.complete(self.lease, attempt)
            except ChampionMoved:
                raise
            except LeaseLost:
                done = None if first else await self.queue.completed_by(self.lease, self.job.attempts)
                if done is None:
                    raise
                log.info("job %s: its completion had committed before the connection was lost", self.job.id)
                return done
            except StorageError as exc:
                if not exc.retriable or self.clock() >= deadline:
                    raise
                log.warning("recording the result of job %s: %s; retrying", self.job.id, exc)
                await asyncio.sleep(_pause(deadline - self.clock()))
            first = False

    async def _keep_trying(self, record: Callable[[], Awaitable[T]]) -> T | None:
        """Record an outcome, waiting out a database outage (up to RECORD_PATIENCE seconds); None
        when the lease is no longer ours or the database stayed away (the lease then expires and
        another worker takes the job)."""
        deadline = self.clock() + RECORD_PATIENCE
        while True:
            try:
                return await record()
            except LeaseLost:
                log.warning("job %s: the lease was lost to another worker; nothing recorded", self.job.id)
                return None
            except StorageError as exc:
                if not exc.retriable:
                    raise
                if self.clock() >= deadline:
                    return None
                log.warning("recording the outcome of job %s: %s; retrying", self.job.id, exc)
                await asyncio.sleep(_pause(deadline - self.clock()))


# How long a worker keeps trying to record what a training came to while the database is away:
# longer than a PostgreSQL failover (about a minute with Patroni's defaults), so that a finished
# training is not thrown away, nor a last attempt failed for good, because of one.
RECORD_PATIENCE = 180.0


def _pause(left: float) -> float:
    """The wait before the next try: two seconds, never past the deadline."""
    return max(0.0, min(2.0, left))


def _against(champion: Champion | None) -> dict[str, Any]:
    """The task's fields that say which champion a candidate is judged against: its artifact,
    version and data profile, and its reference set (dataset, watermark, window, shape start)."""
    if champion is None:
        return {
            "champion": None,
            "champion_version": None,
            "champion_profile": None,
            "champion_dataset_id": None,
            "champion_watermark": None,
            "champion_window": None,
            "champion_after": 0,
        }
    v = champion.version
    return {
        "champion": champion.artifact,
        "champion_version": v.version,
        "champion_profile": v.profile,
        "champion_dataset_id": v.dataset_id,
        "champion_watermark": v.dataset_watermark,
        "champion_window": _window_of(v.info),
        "champion_after": _shape_start_of(v.info),
    }


def _window_of(info: Mapping[str, Any]) -> int | None:
    """The window a version was trained with (its manifest's `train_window`), when it had one."""
    window = info.get("train_window")
    return int(window) if isinstance(window, (int, float)) and not isinstance(window, bool) and window >= 1 else None


def _shape_start_of(info: Mapping[str, Any]) -> int:
    """The id after which a version's samples were (its manifest's `shape_from_id`; 0: all)."""
    start = info.get("shape_from_id")
    return int(start) if isinstance(start, int) and not isinstance(start, bool) and start > 0 else 0
