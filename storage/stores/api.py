"""`ApiStore`: what the HTTP API does with the database, each method one transaction."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract import model_types
from fcl.contract.events import ValidationCheck
from fcl.storage.datasets import (
    DatasetRepository,
)
from fcl.storage.db import Database
from fcl.storage.deadletters import DeadLetterRepository
from fcl.storage.entities import (
    Admission,
    AdmissionPolicy,
    ChampionMove,
    Dataset,
    Job,
    JobTrigger,
    ModelFigure,
    ModelVersion,
    OutboxFigure,
    ParkedOutboxRow,
    QueueFigure,
    StoredDeadLetter,
    TrainingEvent,
    TrainingFigure,
    Transition,
    TriggerRequest,
)
from fcl.storage.errors import IdempotencyKeyReused, StorageError
from fcl.storage.jobs import JobRepository, TrainingEventRepository
from fcl.storage.live import (
    LiveRepository,
    ShadowChallenger,
)
from fcl.storage.outbox import OutboxRepository
from fcl.storage.queue import JobQueue
from fcl.storage.registry import (
    ChampionRepository,
    ModelFigures,
    ModelVersionRepository,
    OperatorRequests,
    ValidationRepository,
)


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
