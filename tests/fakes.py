"""In-memory fakes of the interfaces the trainer worker is built on: `storage.queue.WorkerQueue`
(jobs, leases, attempts, what was recorded) and `worker.runner.Runner` (training children that
answer by a script). The worker's unit tests run its loop and its job supervision against them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fcl.contract.enums import CheckKind, Direction, JobStatus, VerdictKind
from fcl.contract.events import ValidationCheck
from fcl.storage.entities import (
    Candidate,
    CompletedAttempt,
    EndedAttempt,
    Job,
    Lease,
    StoredArtifactRef,
    TrainingInputs,
    Transition,
)
from fcl.storage.errors import ChampionMoved, DatabaseUnavailable, LeaseLost
from fcl.storage.retry import RetryDecision
from fcl.storage.stores import WorkerBeat
from fcl.worker.messages import ChildMessage, Failure, Mode, Outcome, Progress, TrainingTask


def new_job(dataset_id: str = "ds", model_type: str = "goal", priority: int = 5, max_attempts: int = 3) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=uuid.uuid4(),
        dataset_id=dataset_id,
        model_type=model_type,
        status=JobStatus.QUEUED,
        priority=priority,
        attempts=0,
        max_attempts=max_attempts,
        rank_at=now - priority * timedelta(minutes=10),
        run_after=now,
        lease_owner=None,
        lease_token=None,
        lease_expires_at=None,
        cancel_requested=False,
        progress=None,
        error_type=None,
        error_message=None,
        model_version=None,
        created_at=now,
        updated_at=now,
        started_at=None,
        finished_at=None,
    )


@dataclass
class FakeQueue:
    """Jobs in memory, claimed by rank; every call the worker makes is recorded in `calls`."""

    jobs: dict[uuid.UUID, Job] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    champion_moves: int = 0  # how many times `complete` raises ChampionMoved before it records
    cancel: set[uuid.UUID] = field(default_factory=set)  # jobs whose cancel an operator asked for
    lost: set[uuid.UUID] = field(default_factory=set)  # jobs whose lease another worker took
    outage: int = 0  # how many calls fail with DatabaseUnavailable first
    lost_answers: int = 0  # how many completions commit, then fail as if the connection dropped
    completion_outage: int = 0  # how many completions fail with DatabaseUnavailable first (a failover)
    beats: list[WorkerBeat] = field(default_factory=list)
    versions: int = 0

    def add(self, job: Job) -> Job:
        self.jobs[job.id] = job
        return job

    def _down(self, what: str) -> None:
        if self.outage > 0:
            self.outage -= 1
            raise DatabaseUnavailable(f"{what}: the database cannot be reached")

    def _leased(self, lease: Lease) -> Job:
        job = self.jobs[lease.job_id]
        if job.id in self.lost or job.lease_token != lease.token or job.status is not JobStatus.IN_PROGRESS:
            raise LeaseLost(f"job {job.id} is not ours")
        return job

    def recorded(self, what: str) -> list[object]:
        return [arg for name, arg in self.calls if name == what]

    def failures(self) -> list[tuple[EndedAttempt, RetryDecision]]:
        """Each `fail` the worker recorded: the attempt and the retry decision."""
        out = []
        for arg in self.recorded("fail"):
            assert isinstance(arg, tuple)
            out.append((arg[0], arg[1]))
        return out

    async def claim(self, worker: str, *, lease: timedelta, caps: Mapping[str, int]) -> Job | None:
        self._down("claim")
        waiting = sorted(
            (j for j in self.jobs.values() if j.status is JobStatus.QUEUED and j.run_after <= datetime.now(UTC)),
            key=lambda j: (j.rank_at, str(j.id)),
        )
        if not waiting:
            return None
        job = replace(
            waiting[0],
            status=JobStatus.IN_PROGRESS,
            attempts=waiting[0].attempts + 1,
            lease_owner=worker,
            lease_token=uuid.uuid4(),
            lease_expires_at=datetime.now(UTC) + lease,
        )
        self.jobs[job.id] = job
        self.calls.append(("claim", job.id))
        return job

    async def inputs(self, job: Job) -> TrainingInputs:
        self._down("inputs")
        return TrainingInputs(watermark=42, champion=None)

    async def heartbeat(self, lease: Lease, *, lease_for: timedelta, progress: float | None, publish: bool) -> Job:
        self._down("heartbeat")
        job = replace(self._leased(lease), progress=progress, cancel_requested=lease.job_id in self.cancel)
        self.jobs[job.id] = job
        self.calls.append(("heartbeat", (job.id, progress, publish)))
        return job

    async def complete(self, lease: Lease, attempt: CompletedAttempt) -> Transition:
        self._down("complete")
        if self.completion_outage > 0:
            self.completion_outage -= 1
            raise DatabaseUnavailable("complete: the server is read-only during a failover")
        job = self._leased(lease)
        self.calls.append(("complete", attempt))
        if self.champion_moves > 0:
            self.champion_moves -= 1
            raise ChampionMoved("the champion moved")
        self.versions += 1
        done = replace(job, status=JobStatus.COMPLETED, model_version=self.versions, lease_token=None)
        self.jobs[job.id] = done
        if self.lost_answers > 0:
            self.lost_answers -= 1
            raise DatabaseUnavailable("complete: the connection dropped after the commit")
        return Transition(
            job=done, before=JobStatus.IN_PROGRESS, model_version=self.versions, promoted=attempt.candidate.passed
        )

    async def completed_by(self, lease: Lease, attempt: int) -> Transition | None:
        self.calls.append(("completed_by", attempt))
        job = self.jobs[lease.job_id]
        if job.status is JobStatus.COMPLETED and job.lease_owner == lease.owner and job.attempts == attempt:
            return Transition(job=job, before=JobStatus.IN_PROGRESS, model_version=job.model_version)
        return None

    async def fail(self, lease: Lease, attempt: EndedAttempt, decision: RetryDecision) -> Transition:
        self._down("fail")
        job = self._leased(lease)
        self.calls.append(("fail", (attempt, decision)))
        again = decision.retry and job.attempts < job.max_attempts
        after = replace(
            job,
            status=JobStatus.QUEUED if again else JobStatus.FAILED,
            lease_token=None,
            run_after=datetime.now(UTC) + decision.delay,
            error_type=attempt.error_type,
        )
        self.jobs[job.id] = after
        return Transition(job=after, before=JobStatus.IN_PROGRESS)

    async def finish_cancelled(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        job = self._leased(lease)
        self.calls.append(("finish_cancelled", attempt))
        self.jobs[job.id] = replace(job, status=JobStatus.CANCELLED, lease_token=None)
        return Transition(job=self.jobs[job.id], before=JobStatus.IN_PROGRESS)

    async def release(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        job = self._leased(lease)
        self.calls.append(("release", attempt))
        self.jobs[job.id] = replace(job, status=JobStatus.QUEUED, attempts=job.attempts - 1, lease_token=None)
        return Transition(job=self.jobs[job.id], before=JobStatus.IN_PROGRESS)

    async def expire_leases(self, worker: str) -> list[Transition]:
        self._down("expire_leases")
        return []

    async def admit_ready(self, *, priority: int) -> int:
        self._down("admit_ready")
        self.calls.append(("admit_ready", str(priority)))
        return 0

    async def announce(self, beat: WorkerBeat) -> None:
        self._down("announce")
        self.beats.append(beat)

    async def leave(self, worker: str) -> None:
        self.calls.append(("leave", worker))

    async def unpublished_events(self) -> int:
        return 0


def training_task(**fields: Any) -> TrainingTask:
    """A goal FIT task against nothing real (no database, no store), with `fields` changed."""
    from fcl.storage.artifacts import S3Access

    task = TrainingTask(
        mode=Mode.FIT,
        database_url="postgresql://nowhere/db",
        artifact_url="/nowhere",
        s3=S3Access(),
        job_id=uuid.uuid4(),
        attempt=1,
        model_type="goal",
        dataset_id="d",
        watermark=1,
        seed=1,
        hyperparameters={},
        device=None,
        champion=None,
        champion_version=None,
    )
    return replace(task, **fields)


def outcome(task: TrainingTask, *, passed: bool = True) -> Outcome:
    return Outcome(
        fit_metrics={"loss": 0.1},
        candidate=Candidate(
            metrics={"roc_auc": 0.8},
            baseline_metrics=None,
            passed=passed,
            hyperparameters={"n_estimators": 5},
            checks=(
                ValidationCheck(
                    metric="roc_auc",
                    kind=CheckKind.VALUE,
                    value=0.8,
                    baseline=None,
                    threshold=0.6,
                    direction=Direction.HIGHER_IS_BETTER,
                    passed=passed,
                ),
            ),
            artifact=StoredArtifactRef(
                path=f"/artifacts/{task.job_id}-a{task.attempt}.skops", sha256="ab" * 32, size=3, format="skops"
            ),
            fit_seconds=1.5,
            sample_count=10,
            dataset_hash="h",
            seed=task.seed,
            library_versions={},
            code_version="c",
            verdict=VerdictKind.PASSED if passed else VerdictKind.FAILED,
            verdict_message=None if passed else "failed: roc_auc (value)",
        ),
    )


# A script says what a child answers: a list of messages given one per `receive`, after which it
# keeps answering None (a child still working); a callable makes the list from the task.
Script = Callable[[TrainingTask], list[ChildMessage | None]]


def succeeds(task: TrainingTask) -> list[ChildMessage | None]:
    return [Progress(fraction=0.5), outcome(task)]


def fails(error_type: str = "RuntimeError", retriable: bool = True) -> Script:
    return lambda task: [Failure(type=error_type, message="boom", retriable=retriable)]


def hangs(task: TrainingTask) -> list[ChildMessage | None]:
    return [Progress(fraction=0.2)]


@dataclass
class FakeChild:
    messages: list[ChildMessage | None]
    stopped: bool = False

    async def receive(self, timeout: float) -> ChildMessage | None:
        await asyncio.sleep(0.01)  # a child takes a moment
        return self.messages.pop(0) if self.messages else None

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeRunner:
    script: Script = succeeds
    started: list[TrainingTask] = field(default_factory=list)
    children: list[FakeChild] = field(default_factory=list)

    async def start(self, task: TrainingTask) -> FakeChild:
        self.started.append(task)
        child = FakeChild(list(self.script(task)))
        self.children.append(child)
        return child

    def modes(self) -> list[Mode]:
        return [t.mode for t in self.started]
