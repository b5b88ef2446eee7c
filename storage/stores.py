"""One store per service: everything a service does with the database, each method one
transaction. The services never open a session, never write SQL and never import SQLAlchemy or
asyncpg (scripts/check_layers.py holds them to it); what a method does is the owners' work:

- `IngestStore` (streams): a batch of triggers admitted (`storage.queue`) or of samples stored and
  counted (`storage.datasets`), with the batch's dead letters (`storage.outbox`), in one commit;
- `WorkerStore` (a trainer worker): claim, heartbeat, complete (the candidate recorded by
  `storage.registry`), fail, release, lease expiry, the retrain sweep, retention;
- `ApiStore` (web): the operator's transitions (trigger, cancel, retry, promote, rollback) and the
  reads that are not built as JSON by PostgreSQL (`storage.reads` serves those).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract import model_types
from fcl.contract.enums import AdmissionOutcome
from fcl.contract.events import ValidationCheck
from fcl.storage.datasets import (
    DatasetRepository,
    SampleRepository,
    SampleRetention,
    threshold_events,
    trigger_namespace,
)
from fcl.storage.datasets import load_samples as load_samples  # the training child's reader (its own connection)
from fcl.storage.db import Database
from fcl.storage.deadletters import DeadLetterRepository, write_dead_letters
from fcl.storage.entities import (
    Admission,
    AdmissionPolicy,
    Champion,
    ChampionMove,
    CompletedAttempt,
    Dataset,
    DeadLetter,
    EndedAttempt,
    Job,
    JobTrigger,
    Lease,
    ModelFigure,
    ModelVersion,
    NewSampleBatch,
    OutboxFigure,
    ParkedOutboxRow,
    QueueFigure,
    SampleIngest,
    StoredDeadLetter,
    TrainingEvent,
    TrainingFigure,
    TrainingInputs,
    Transition,
    TriggerRequest,
)
from fcl.storage.errors import IdempotencyKeyReused as IdempotencyKeyReused
from fcl.storage.errors import StorageError
from fcl.storage.jobs import JobRepository, TrainingEventRepository, WorkerRepository
from fcl.storage.live import LiveIngest as LiveIngest
from fcl.storage.live import LiveRepository
from fcl.storage.live import NewOutcome as NewOutcome
from fcl.storage.live import NewPrediction as NewPrediction
from fcl.storage.live import RetrainReason as RetrainReason
from fcl.storage.live import ServingChampion as ServingChampion
from fcl.storage.live import ShadowChallenger as ShadowChallenger
from fcl.storage.live import ShadowPairs as ShadowPairs
from fcl.storage.live import VersionToEvaluate as VersionToEvaluate
from fcl.storage.live import WindowPairs as WindowPairs
from fcl.storage.outbox import OutboxRepository
from fcl.storage.queue import JobQueue
from fcl.storage.registry import (
    ChampionRepository,
    ModelFigures,
    ModelVersionRepository,
    OperatorRequests,
    RetentionRepository,
    ValidationRepository,
)
from fcl.storage.retry import RetryDecision


# -- streams ----------------------------------------------------------------------------------------
class IngestStore:
    """What the streams agents commit: each method one transaction, dead letters included."""

    def __init__(self, db: Database, policy: AdmissionPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or AdmissionPolicy()

    async def admit(
        self,
        requests: Sequence[TriggerRequest],
        *,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[int, str], DeadLetter],
    ) -> list[Admission | None]:
        """Admit a batch of triggers by the admission rules and write the batch's dead letters.
        A trigger for a dataset that holds samples of another model type is refused (None in its
        place) and dead-lettered with the reason (`letter_for_refused(index, reason)`): its job
        would load the whole other dataset only to fail."""
        async with self.db.transaction() as s:
            kinds = await DatasetRepository(s).model_types([r.dataset_id for r in requests]) if requests else {}
            refused = {
                i: f"dataset {r.dataset_id!r} holds {kinds[r.dataset_id]} samples, not {r.model_type}"
                for i, r in enumerate(requests)
                if kinds.get(r.dataset_id, r.model_type) != r.model_type
            }
            await write_dead_letters(
                s, [*dead_letters, *(letter_for_refused(i, reason) for i, reason in refused.items())]
            )
            admitted = iter(
                await JobQueue(s, self.policy).admit([r for i, r in enumerate(requests) if i not in refused])
            )
            return [None if i in refused else next(admitted) for i in range(len(requests))]

    async def ingest(
        self,
        batches: Sequence[NewSampleBatch],
        *,
        thresholds: dict[str, int],
        priority: int,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> SampleIngest:
        """Store and count sample batches, announce each threshold crossed (a `dataset-threshold`
        event in the outbox), and write the batch's dead letters and one for each batch the
        dataset refused (`letter_for_refused(event_id, reason)`)."""
        async with self.db.transaction() as s:
            result = await SampleRepository(s).ingest(batches, thresholds=thresholds)
            refused = [letter_for_refused(event, reason) for event, reason in result.refused.items()]
            # one statement for the crossings' events and the letters, in that order
            crossed = (
                threshold_events(result.crossings, priority=priority, namespace=await trigger_namespace(s))
                if result.crossings
                else []
            )
            await OutboxRepository(s).add_many(crossed)
            await write_dead_letters(s, [*dead_letters, *refused])
            return result

    async def predictions(
        self,
        predictions: Sequence[NewPrediction],
        *,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> LiveIngest:
        """Record predictions (joining the outcomes that waited for them) and the batch's dead
        letters, one for each prediction of a version that was never recorded."""
        return await self._live(lambda live: live.record_predictions(predictions), dead_letters, letter_for_refused)

    async def outcomes(
        self,
        outcomes: Sequence[NewOutcome],
        *,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> LiveIngest:
        """Join outcomes with their predictions (or keep them waiting) and write the batch's dead
        letters, one for each outcome that names another model type than its prediction's."""
        return await self._live(lambda live: live.record_outcomes(outcomes), dead_letters, letter_for_refused)

    async def _live(
        self,
        record: Callable[[LiveRepository], Awaitable[LiveIngest]],
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> LiveIngest:
        async with self.db.transaction() as s:
            result = await record(LiveRepository(s))
            refused = [letter_for_refused(event, reason) for event, reason in result.refused.items()]
            await write_dead_letters(s, [*dead_letters, *refused])
            return result

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        async with self.db.transaction() as s:
            await write_dead_letters(s, letters)


# -- a trainer worker -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class WorkerBeat:
    """A worker's heartbeat row: who it is and which jobs it runs (`/training-status` shows it)."""

    worker_id: str
    hostname: str
    pid: int
    running: tuple[uuid.UUID, ...]
    info: Mapping[str, Any]


class WorkerQueue(Protocol):
    """Everything a trainer worker does with storage. `WorkerStore` is the real one; the worker's
    unit tests use an in-memory fake of this same interface."""

    async def claim(self, worker: str, *, lease: timedelta, caps: Mapping[str, int]) -> Job | None: ...

    async def inputs(self, job: Job) -> TrainingInputs: ...

    async def heartbeat(self, lease: Lease, *, lease_for: timedelta, progress: float | None, publish: bool) -> Job: ...

    async def complete(self, lease: Lease, attempt: CompletedAttempt) -> Transition: ...

    async def completed_by(self, lease: Lease, attempt: int) -> Transition | None: ...

    async def fail(self, lease: Lease, attempt: EndedAttempt, decision: RetryDecision) -> Transition: ...

    async def finish_cancelled(self, lease: Lease, attempt: EndedAttempt) -> Transition: ...

    async def release(self, lease: Lease, attempt: EndedAttempt) -> Transition: ...

    async def expire_leases(self, worker: str) -> list[Transition]: ...

    async def admit_ready(self, *, priority: int) -> int: ...

    async def announce(self, beat: WorkerBeat) -> None: ...

    async def leave(self, worker: str) -> None: ...

    async def unpublished_events(self) -> int: ...


class WorkerStore:
    """`WorkerQueue` on PostgreSQL: each call one transaction of `JobQueue`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, worker: str, *, lease: timedelta, caps: Mapping[str, int]) -> Job | None:
        async with self.db.transaction() as s:
            claimed = await JobQueue(s).claim(worker=worker, lease=lease, caps=caps or None)
        return claimed.job if claimed else None

    async def inputs(self, job: Job) -> TrainingInputs:
        async with self.db.transaction() as s:
            watermark = await SampleRepository(s).watermark(job.dataset_id)
            dataset = await DatasetRepository(s).get(job.dataset_id)
            move = await ChampionRepository(s).current(job.model_type)
            version = await ModelVersionRepository(s).get(job.model_type, move.version) if move else None
        champion = Champion(move=move, version=version) if move and version else None
        return TrainingInputs(
            watermark=watermark,
            champion=champion,
            shape_from_id=dataset.shape_from_id if dataset else 0,
            shape_version=dataset.shape_version if dataset else 1,
        )

    async def heartbeat(self, lease: Lease, *, lease_for: timedelta, progress: float | None, publish: bool) -> Job:
        async with self.db.transaction() as s:
            beat = await JobQueue(s).heartbeat(lease, lease_for=lease_for, progress=progress, publish=publish)
        return beat.job

    async def complete(self, lease: Lease, attempt: CompletedAttempt) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).complete(lease, attempt)

    async def completed_by(self, lease: Lease, attempt: int) -> Transition | None:
        async with self.db.transaction() as s:
            return await JobQueue(s).completed_by(lease, attempt)

    async def fail(self, lease: Lease, attempt: EndedAttempt, decision: RetryDecision) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).fail(lease, attempt, decision)

    async def finish_cancelled(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).finish_cancelled(lease, attempt)

    async def release(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).release(lease, attempt)

    async def expire_leases(self, worker: str) -> list[Transition]:
        async with self.db.transaction() as s:
            return await JobQueue(s).expire_leases(reclaimed_by=worker)

    async def admit_ready(self, *, priority: int) -> int:
        """The retrain sweep; the number of jobs it created."""
        async with self.db.transaction() as s:
            admitted = await JobQueue(s).admit_ready(priority=priority, source="retrain-sweep")
        return sum(1 for a in admitted if a.outcome is AdmissionOutcome.CREATED)

    async def announce(self, beat: WorkerBeat) -> None:
        async with self.db.transaction() as s:
            await WorkerRepository(s).beat(
                worker_id=beat.worker_id,
                hostname=beat.hostname,
                pid=beat.pid,
                current_job_ids=list(beat.running),
                info=dict(beat.info),
            )

    async def leave(self, worker: str) -> None:
        async with self.db.transaction() as s:
            await WorkerRepository(s).remove(worker)

    async def unpublished_events(self) -> int:
        async with self.db.transaction() as s:
            return await OutboxRepository(s).unpublished()

    # -- retention (worker.retention) --
    async def sample_retention(
        self, *, keep_days: float, windows: dict[str, int], partition_seconds: int = 86400, ahead: int = 9
    ) -> list[str]:
        """Keep `ahead` partitions made ahead, and drop the old ones nothing needs; their names."""
        async with self.db.transaction() as s:
            retention = SampleRetention(s)
            await retention.ensure_partitions(ahead, width_seconds=partition_seconds)
            return await retention.drop_old_days(keep_days=keep_days, windows=windows)

    async def forget_sample_batches(self, *, keep_days: float) -> int:
        """Forget the ids of the samples events whose samples have all gone; how many."""
        async with self.db.transaction() as s:
            return await SampleRetention(s).forget_batches(keep_days=keep_days)

    async def forget_dead_letters(self, *, older_than: timedelta) -> int:
        """Delete the kept refused inputs older than `older_than`."""
        async with self.db.transaction() as s:
            return await DeadLetterRepository(s).forget_before(datetime.now(UTC) - older_than)

    async def forget_operator_keys(self, *, older_than: timedelta) -> int:
        """Forget the Idempotency-Keys of champion moves older than `older_than`."""
        async with self.db.transaction() as s:
            return await OperatorRequests(s).forget_before(datetime.now(UTC) - older_than)

    async def forget_predictions(self, *, older_than: timedelta) -> int:
        async with self.db.transaction() as s:
            return await LiveRepository(s).forget(older_than=older_than)

    async def take_live_turn(self, every: float) -> bool:
        async with self.db.transaction() as s:
            return await LiveRepository(s).take_turn(every)

    async def versions_to_evaluate(self, within: timedelta) -> list[VersionToEvaluate]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).versions_to_evaluate(within)

    async def live_windows(
        self, model_type: str, version: int, *, sinces: Mapping[str, datetime], until: datetime, limit: int
    ) -> dict[str, WindowPairs]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).windows(model_type, version, sinces=sinces, until=until, limit=limit)

    async def champions(self) -> list[ServingChampion]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).champions()

    async def retrain_for(self, reason: RetrainReason, *, priority: int) -> Admission | None:
        """Queue a job for `reason` (the champion's dataset), once: None when it fired before. The
        reason and the job it queued (or joined) are recorded in the same transaction."""
        async with self.db.transaction() as s:
            live = LiveRepository(s)
            if not await live.fire(reason):
                return None
            (admission,) = await JobQueue(s).admit(
                [
                    TriggerRequest(
                        event_id=reason.event_id,
                        dataset_id=reason.dataset_id,
                        model_type=reason.model_type,
                        priority=priority,
                        source="live-evaluation",
                        reason=reason.figures,
                    )
                ]
            )
            await live.fired(reason, admission.job_id)
            return admission

    async def save_live_figures(self, model_type: str, version: int, window: str, figures: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            await LiveRepository(s).save_figures(model_type, version, window, figures)

    async def shadows(self) -> list[ShadowChallenger]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).shadows()

    async def versions_to_compare(self, model_type: str, versions: Sequence[int]) -> dict[int, VersionToEvaluate]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).versions(model_type, versions)

    async def shadow_window(
        self, model_type: str, *, champion: int, challenger: int, since: datetime, until: datetime, limit: int
    ) -> ShadowPairs:
        async with self.db.transaction() as s:
            return await LiveRepository(s).shadow_window(
                model_type, champion=champion, challenger=challenger, since=since, until=until, limit=limit
            )

    async def save_shadow_figures(self, model_type: str, window: str, figures: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            await LiveRepository(s).save_shadow_figures(model_type, window, figures)

    async def mark_for_retention(self, model_type: str, *, keep_versions: int, keep_days: float) -> list[int]:
        """Mark the versions the retention no longer keeps as deleted; their numbers."""
        async with self.db.transaction() as s:
            return await RetentionRepository(s).mark(model_type, keep_versions=keep_versions, keep_days=keep_days)

    async def artifacts_to_remove(self) -> list[ModelVersion]:
        async with self.db.transaction() as s:
            return await RetentionRepository(s).artifacts_to_remove()

    async def artifact_removed(self, model_type: str, version: int) -> None:
        async with self.db.transaction() as s:
            await RetentionRepository(s).artifact_removed(model_type, version)


# -- web --------------------------------------------------------------------------------------------
class UnknownDataset(StorageError, LookupError):
    """No samples have arrived for the dataset a trigger names."""


class ModelTypeMismatch(StorageError):
    """The dataset holds samples of another model type."""


async def _once(
    s: AsyncSession,
    model_type: str,
    idempotency: tuple[str, str] | None,
    move: Callable[[], Awaitable[ChampionMove | None]],
) -> ChampionMove | None:
    """`move()`, made at most once per Idempotency-Key: a request whose key (and digest) made a
    move before answers that move again; a key that came with another request is refused."""
    if idempotency is None:
        return await move()
    requests = OperatorRequests(s)
    done = await requests.answered(model_type, *idempotency)
    if done is not None:
        return done
    made = await move()
    if made is not None:
        await requests.remember(model_type, made, *idempotency)
    return made


@dataclass(frozen=True, kw_only=True)
class Triggered:
    admission: Admission
    job: Job
    event_id: str


@dataclass(frozen=True, kw_only=True)
class Validation:
    event: TrainingEvent
    checks: list[ValidationCheck]
    version: ModelVersion | None


class ApiStore:
    """What the HTTP API does with the database, each method one transaction."""

    def __init__(self, db: Database, policy: AdmissionPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or AdmissionPolicy()

    async def trigger(
        self, *, model_type: str, dataset_id: str, priority: int, idempotency_key: str | None
    ) -> Triggered:
        """Queue a job for a dataset by the admission rules. With a key, the trigger's id carries a
        digest of the request: the same key and request answer the first job again, the same key
        with another request is refused (`IdempotencyKeyReused`)."""
        async with self.db.transaction() as s:
            event_id = f"http:{uuid.uuid4()}"
            if idempotency_key is not None:
                digest = hashlib.sha256(f"{model_type}\0{dataset_id}\0{priority}".encode()).hexdigest()[:16]
                event_id = f"http:{idempotency_key}#{digest}"
                used = await JobRepository(s).triggers_under(f"http:{idempotency_key}")
                if used and event_id not in used:
                    if used != [f"http:{idempotency_key}"]:
                        raise IdempotencyKeyReused(
                            "this Idempotency-Key was used with another request (model type, dataset or priority)"
                        )
                    event_id = used[0]  # made before requests were digested: answered as it was
            dataset = await DatasetRepository(s).get(dataset_id)
            if dataset is None:
                raise UnknownDataset(
                    f"no samples have arrived for dataset {dataset_id!r}; "
                    "a dataset exists once its first training-samples event is stored"
                )
            if dataset.model_type != model_type:
                raise ModelTypeMismatch(f"dataset {dataset_id!r} holds {dataset.model_type} samples, not {model_type}")
            request = TriggerRequest(
                event_id=event_id,
                dataset_id=dataset_id,
                model_type=model_type,
                priority=priority,
                source="http",
                reason={"kind": "operator"},
            )
            (admission,) = await JobQueue(s, self.policy).admit([request])
            job = await JobRepository(s).get(admission.job_id)
        assert job is not None  # admitted in this transaction
        return Triggered(admission=admission, job=job, event_id=event_id)

    async def admit_ready(self, *, priority: int) -> list[Admission]:
        """A job for each dataset at its threshold with none waiting or running (idempotent: the
        same state of a dataset makes one job however often it is asked)."""
        async with self.db.transaction() as s:
            return await JobQueue(s, self.policy).admit_ready(priority=priority, source="http")

    async def triggers(
        self, job_id: uuid.UUID, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[JobTrigger] | None:
        """A page of the job's triggers in arrival order; None when there is no such job."""
        async with self.db.transaction() as s:
            jobs = JobRepository(s)
            page = await jobs.triggers(job_id, limit=limit, after=after)
            if not page and await jobs.get(job_id) is None:
                return None
            return page

    async def job(self, job_id: uuid.UUID) -> tuple[Job, list[TrainingEvent]] | None:
        async with self.db.transaction() as s:
            job = await JobRepository(s).get(job_id)
            return (job, await TrainingEventRepository(s).for_job(job.id)) if job else None

    async def cancel(self, job_id: uuid.UUID) -> Transition | None:
        async with self.db.transaction() as s:
            return await JobQueue(s).cancel(job_id)

    async def retry(self, job_id: uuid.UUID, *, extra_attempts: Callable[[str], int]) -> Transition | None:
        """Re-queue a failed or cancelled job with `extra_attempts(model_type)` more attempts."""
        async with self.db.transaction() as s:
            current = await JobRepository(s).get(job_id)
            if current is None:
                return None
            return await JobQueue(s).retry(job_id, extra_attempts=extra_attempts(current.model_type))

    async def rollback(
        self,
        model_type: str,
        *,
        actor: str,
        expected_version: int | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> ChampionMove | None:
        """Roll the champion back (see `ChampionRepository.rollback`). With `idempotency` (the
        request's Idempotency-Key and a digest of the request), a repeat answers the first move
        again and the same key with another request is refused (`IdempotencyKeyReused`)."""
        async with self.db.transaction() as s:
            return await _once(
                s,
                model_type,
                idempotency,
                lambda: ChampionRepository(s).rollback(model_type, actor=actor, expected_version=expected_version),
            )

    async def promote(
        self,
        model_type: str,
        version: int,
        *,
        note: str,
        actor: str,
        expected_version: int | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> ChampionMove:
        """Promote by hand (see `ChampionRepository.promote`), idempotent as `rollback`."""
        async with self.db.transaction() as s:
            move = await _once(
                s,
                model_type,
                idempotency,
                lambda: ChampionRepository(s).promote(
                    model_type, version, note=note, actor=actor, expected_version=expected_version
                ),
            )
        assert move is not None  # a promote moves the champion or raises
        return move

    async def champion(self, model_type: str) -> tuple[ChampionMove, ModelVersion] | None:
        async with self.db.transaction() as s:
            move = await ChampionRepository(s).current(model_type)
            version = await ModelVersionRepository(s).get(model_type, move.version) if move else None
        return (move, version) if move is not None and version is not None else None

    async def version(self, model_type: str, version: int) -> ModelVersion | None:
        async with self.db.transaction() as s:
            return await ModelVersionRepository(s).get(model_type, version)

    async def validation(self, training_event_id: uuid.UUID) -> Validation | None:
        async with self.db.transaction() as s:
            event = await TrainingEventRepository(s).get(training_event_id)
            if event is None:
                return None
            checks = await ValidationRepository(s).for_training_event(training_event_id)
            version = await ModelVersionRepository(s).for_training_event(training_event_id)
        return Validation(event=event, checks=checks, version=version)

    async def outbox(self, *, limit: int = 50, after: int = 0) -> tuple[int, list[ParkedOutboxRow]]:
        """How many rows are not yet published, and a page of the parked ones."""
        async with self.db.transaction() as s:
            outbox = OutboxRepository(s)
            return await outbox.unpublished(), await outbox.parked(limit=limit, after=after)

    async def dataset(self, dataset_id: str) -> Dataset | None:
        async with self.db.transaction() as s:
            return await DatasetRepository(s).get(dataset_id)

    async def reset_shape(self, dataset_id: str) -> Dataset | None:
        """Forget a dataset's shape (see `DatasetRepository.reset_shape`)."""
        async with self.db.transaction() as s:
            return await DatasetRepository(s).reset_shape(dataset_id)

    async def dead_letters(
        self, *, limit: int, after: int, reason: str | None, since: datetime | None
    ) -> list[StoredDeadLetter]:
        """A page of the kept refused inputs, oldest first."""
        async with self.db.transaction() as s:
            return await DeadLetterRepository(s).page(limit=limit, after=after, reason=reason, since=since)

    async def dead_letter(self, letter: int) -> StoredDeadLetter | None:
        async with self.db.transaction() as s:
            return await DeadLetterRepository(s).get(letter)

    async def for_replay(
        self, *, ids: Sequence[int] | None, reason: str | None, since: datetime | None, limit: int
    ) -> list[StoredDeadLetter]:
        """The kept inputs a replay asked for, oldest first (read; nothing is held while they
        are sent)."""
        async with self.db.transaction() as s:
            return await DeadLetterRepository(s).page(limit=limit, ids=ids, reason=reason, since=since)

    async def replayed(self, ids: Sequence[int]) -> None:
        async with self.db.transaction() as s:
            await DeadLetterRepository(s).replayed(ids)

    async def unpark(self, ids: Sequence[int] | None) -> int:
        """Parked outbox rows back in line (these, or all); how many."""
        async with self.db.transaction() as s:
            return await OutboxRepository(s).unpark(ids)

    async def live_figures(self, model_type: str, version: int, window: str) -> tuple[dict[str, Any], datetime] | None:
        async with self.db.transaction() as s:
            return await LiveRepository(s).figures(model_type, version, window)

    async def all_live_figures(self) -> list[tuple[str, int, str, dict[str, Any]]]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).all_figures()

    async def set_shadow(self, model_type: str, version: int, actor: str | None) -> ShadowChallenger | None:
        async with self.db.transaction() as s:
            return await LiveRepository(s).set_shadow(model_type, version, actor)

    async def clear_shadow(self, model_type: str) -> int | None:
        async with self.db.transaction() as s:
            return await LiveRepository(s).clear_shadow(model_type)

    async def shadow(
        self, model_type: str, window: str
    ) -> tuple[ShadowChallenger | None, tuple[dict[str, Any], datetime] | None]:
        """The model type's challenger, and the last comparison over `window`."""
        async with self.db.transaction() as s:
            live = LiveRepository(s)
            return await live.shadow(model_type), await live.shadow_figures(model_type, window)

    async def figures(self) -> tuple[list[QueueFigure], list[TrainingFigure], OutboxFigure, list[ModelFigure]]:
        async with self.db.transaction() as s:
            queue, training = await JobRepository(s).figures()
            models = await ModelFigures(s).read(model_types.names())
            return queue, training, await OutboxRepository(s).figures(), models

    async def ping(self) -> None:
        await self.db.ping()
