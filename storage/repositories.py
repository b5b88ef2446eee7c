"""Repositories: every SQL statement of the service, returning entities from `storage.entities`.

Each repository works inside the caller's unit of work (`Database.transaction()`), so several
of them can write in one transaction (a job and its outbox event, a version and its champion).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, String, cast, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.entities import (
    Admission,
    AdmissionOutcome,
    ChampionMove,
    ChampionReason,
    Dataset,
    Direction,
    EncodedOutboxMessage,
    Job,
    JobStatus,
    ModelVersion,
    NewModelVersion,
    NewSampleBatch,
    OutboxMessage,
    QueueFigure,
    SampleBatchResult,
    SampleIngest,
    ThresholdCrossing,
    TrainingEvent,
    TrainingEventStatus,
    TrainingFigure,
    TriggerRequest,
    ValidationCheck,
    WorkerHeartbeat,
)
from storage.models import (
    ChampionLedgerRow,
    DatasetRow,
    JobTriggerRow,
    ModelVersionRow,
    OutboxRow,
    SampleBatchRow,
    TrainingEventRow,
    TrainingJobRow,
    TrainingSampleRow,
    ValidationResultRow,
    WorkerHeartbeatRow,
)

# One priority level is worth this much waiting: a job of priority p queued at t sorts as if
# queued at t - p * step, so it beats lower priorities queued up to that long after it, and a
# low-priority job is never starved by a stream of higher ones.
DEFAULT_AGEING_STEP = timedelta(minutes=10)


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset(
        dataset_id=row.dataset_id,
        model_type=row.model_type,
        threshold=row.threshold,
        samples_since_training=row.samples_since_training,
        total_samples=row.total_samples,
        crossings=row.crossings,
        last_trained_at=row.last_trained_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _job_from_mapping(row: Any) -> Job:
    return Job(
        id=row["id"],
        dataset_id=row["dataset_id"],
        model_type=row["model_type"],
        status=JobStatus(row["status"]),
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        rank_at=row["rank_at"],
        run_after=row["run_after"],
        lease_owner=row["lease_owner"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=row["cancel_requested"],
        progress=row["progress"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        model_version=row["model_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        trigger_event_ids=tuple(row["trigger_event_ids"] or ()),
    )


def _job(row: TrainingJobRow, triggers: Sequence[str] = ()) -> Job:
    return Job(
        id=row.id,
        dataset_id=row.dataset_id,
        model_type=row.model_type,
        status=JobStatus(row.status),
        priority=row.priority,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        rank_at=row.rank_at,
        run_after=row.run_after,
        lease_owner=row.lease_owner,
        lease_token=row.lease_token,
        lease_expires_at=row.lease_expires_at,
        cancel_requested=row.cancel_requested,
        progress=row.progress,
        error_type=row.error_type,
        error_message=row.error_message,
        model_version=row.model_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        trigger_event_ids=tuple(triggers),
    )


def _version(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        model_type=row.model_type,
        version=row.version,
        training_event_id=row.training_event_id,
        job_id=row.job_id,
        dataset_id=row.dataset_id,
        parent_version=row.parent_version,
        artifact_path=row.artifact_path,
        artifact_sha256=row.artifact_sha256,
        artifact_size=row.artifact_size,
        artifact_format=row.artifact_format,
        metrics=dict(row.metrics),
        hyperparameters=dict(row.hyperparameters),
        dataset_watermark=row.dataset_watermark,
        dataset_hash=row.dataset_hash,
        seed=row.seed,
        library_versions=dict(row.library_versions),
        code_version=row.code_version,
        created_at=row.created_at,
    )


def _move(row: ChampionLedgerRow) -> ChampionMove:
    return ChampionMove(
        model_type=row.model_type,
        seq=row.seq,
        version=row.version,
        previous_version=row.previous_version,
        reason=ChampionReason(row.reason),
        event_id=row.event_id,
        created_at=row.created_at,
    )


def _training_event(row: TrainingEventRow) -> TrainingEvent:
    return TrainingEvent(
        id=row.id,
        job_id=row.job_id,
        attempt=row.attempt,
        dataset_id=row.dataset_id,
        model_type=row.model_type,
        status=TrainingEventStatus(row.status),
        worker=row.worker,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_seconds=row.duration_seconds,
        fit_seconds=row.fit_seconds,
        sample_count=row.sample_count,
        dataset_watermark=row.dataset_watermark,
        metrics=dict(row.metrics),
        error_type=row.error_type,
        error_message=row.error_message,
        model_version=row.model_version,
        validation_passed=row.validation_passed,
        promoted=row.promoted,
    )


def _outbox(row: OutboxRow) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        event_id=row.event_id,
        topic=row.topic,
        key=row.key,
        payload=dict(row.payload),
        created_at=row.created_at,
        published_at=row.published_at,
    )


class DatasetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, dataset_id: str) -> Dataset | None:
        row = await self.session.get(DatasetRow, dataset_id)
        return _dataset(row) if row else None

    async def ensure(self, dataset_id: str, model_type: str, threshold: int) -> Dataset:
        """The dataset, created on first sight with `threshold`; an existing one is unchanged."""
        await self.session.execute(
            insert(DatasetRow)
            .values(dataset_id=dataset_id, model_type=model_type, threshold=threshold)
            .on_conflict_do_nothing(index_elements=[DatasetRow.dataset_id])
        )
        row = (
            await self.session.execute(
                select(DatasetRow).where(DatasetRow.dataset_id == dataset_id).execution_options(populate_existing=True)
            )
        ).scalar_one()
        return _dataset(row)

    async def ready(self) -> list[Dataset]:
        """Datasets whose counter has reached their threshold."""
        rows = (
            await self.session.scalars(
                select(DatasetRow)
                .where(DatasetRow.samples_since_training >= DatasetRow.threshold)
                .order_by(DatasetRow.dataset_id)
            )
        ).all()
        return [_dataset(r) for r in rows]

    async def consume_up_to(self, dataset_id: str, watermark: int) -> Dataset:
        """A training that used every sample with id <= `watermark` finished: take the samples it
        used and had not been used before off the counter, and remember the watermark."""
        row = (
            await self.session.scalars(
                select(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).one()
        if watermark <= row.trained_watermark:
            return _dataset(row)
        used = await self.session.scalar(
            select(func.count())
            .select_from(TrainingSampleRow)
            .where(
                TrainingSampleRow.dataset_id == dataset_id,
                TrainingSampleRow.id > row.trained_watermark,
                TrainingSampleRow.id <= watermark,
            )
        )
        dataset = await self.consume(dataset_id, int(used or 0))
        await self.session.execute(
            update(DatasetRow).where(DatasetRow.dataset_id == dataset_id).values(trained_watermark=watermark)
        )
        return dataset

    async def consume(self, dataset_id: str, used: int) -> Dataset:
        """Take `used` samples off the counter after a training (samples that arrived during
        it still count), never below zero."""
        row = (
            await self.session.execute(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .values(
                    samples_since_training=func.greatest(DatasetRow.samples_since_training - used, 0),
                    last_trained_at=func.now(),
                    updated_at=func.now(),
                )
                .returning(DatasetRow)
            )
        ).scalar_one()
        return _dataset(row)


class SampleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_batch(
        self,
        *,
        event_id: str,
        dataset_id: str,
        model_type: str,
        default_threshold: int,
        samples: Sequence[dict[str, Any]],
        occurred_at: datetime | None = None,
    ) -> SampleBatchResult:
        """Store one samples event and count it, once: a redelivered `event_id` stores nothing."""
        datasets = DatasetRepository(self.session)
        await datasets.ensure(dataset_id, model_type, default_threshold)
        inserted = (
            await self.session.execute(
                insert(SampleBatchRow)
                .values(event_id=event_id, dataset_id=dataset_id, sample_count=len(samples), occurred_at=occurred_at)
                .on_conflict_do_nothing(index_elements=[SampleBatchRow.event_id])
                .returning(SampleBatchRow.event_id)
            )
        ).scalar_one_or_none()
        if inserted is None:
            dataset = await datasets.get(dataset_id)
            assert dataset is not None
            return SampleBatchResult(stored=0, duplicate=True, dataset=dataset)
        if samples:
            await self.session.execute(
                insert(TrainingSampleRow),
                [{"dataset_id": dataset_id, "batch_event_id": event_id, "payload": s} for s in samples],
            )
        row = (
            await self.session.execute(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .values(
                    samples_since_training=DatasetRow.samples_since_training + len(samples),
                    total_samples=DatasetRow.total_samples + len(samples),
                    updated_at=func.now(),
                )
                .returning(DatasetRow)
            )
        ).scalar_one()
        return SampleBatchResult(stored=len(samples), duplicate=False, dataset=_dataset(row))

    async def ingest(self, batches: Sequence[NewSampleBatch], *, thresholds: dict[str, int]) -> SampleIngest:
        """Store many samples events in this transaction: datasets are created on first sight
        (threshold from `thresholds` by model type), a batch whose event id was stored before is
        skipped, a batch naming another model type than its dataset's is refused, samples are
        COPYed, counters raised, and each counter that reaches its threshold is a crossing."""
        first_type: dict[str, str] = {}
        for b in batches:
            first_type.setdefault(b.dataset_id, b.model_type)
        dataset_ids = sorted(first_type)
        await self.session.execute(
            insert(DatasetRow)
            .values(
                [
                    {"dataset_id": d, "model_type": first_type[d], "threshold": thresholds[first_type[d]]}
                    for d in dataset_ids
                ]
            )
            .on_conflict_do_nothing(index_elements=[DatasetRow.dataset_id])
        )
        # Lock the datasets in one order so concurrent ingests cannot deadlock.
        types = {
            row.dataset_id: row.model_type
            for row in (
                await self.session.execute(
                    select(DatasetRow.dataset_id, DatasetRow.model_type)
                    .where(DatasetRow.dataset_id.in_(dataset_ids))
                    .order_by(DatasetRow.dataset_id)
                    .with_for_update()
                )
            ).all()
        }
        mismatched = {b.event_id: types[b.dataset_id] for b in batches if types[b.dataset_id] != b.model_type}
        candidates: dict[str, NewSampleBatch] = {}
        for b in batches:
            if b.event_id not in mismatched:
                candidates.setdefault(b.event_id, b)
        new_ids: set[str] = set()
        if candidates:
            new_ids = set(
                (
                    await self.session.scalars(
                        insert(SampleBatchRow)
                        .values(
                            [
                                {
                                    "event_id": b.event_id,
                                    "dataset_id": b.dataset_id,
                                    "sample_count": len(b.samples),
                                    "occurred_at": b.occurred_at,
                                }
                                for b in candidates.values()
                            ]
                        )
                        .on_conflict_do_nothing(index_elements=[SampleBatchRow.event_id])
                        .returning(SampleBatchRow.event_id)
                    )
                ).all()
            )
        fresh = [b for b in candidates.values() if b.event_id in new_ids]
        duplicates = [b.event_id for b in batches if b.event_id not in mismatched and b.event_id not in new_ids]
        records = [(b.dataset_id, b.event_id, json.dumps(sample)) for b in fresh for sample in b.samples]
        if records:
            raw = await (await self.session.connection()).get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                "training_samples", records=records, columns=["dataset_id", "batch_event_id", "payload"]
            )
        added: dict[str, int] = {}
        for b in fresh:
            added[b.dataset_id] = added.get(b.dataset_id, 0) + len(b.samples)
        crossings: list[ThresholdCrossing] = []
        if added:
            ids = sorted(added)
            rows = (
                await self.session.execute(
                    text("""
                UPDATE datasets AS d
                SET samples_since_training = d.samples_since_training + inc.n,
                    total_samples = d.total_samples + inc.n,
                    crossings = d.crossings + CASE WHEN d.samples_since_training < d.threshold
                        AND d.samples_since_training + inc.n >= d.threshold THEN 1 ELSE 0 END,
                    updated_at = now()
                FROM unnest(CAST(:ids AS text[]), CAST(:ns AS bigint[])) AS inc(dataset_id, n)
                WHERE d.dataset_id = inc.dataset_id
                RETURNING d.dataset_id, d.model_type, d.crossings, d.samples_since_training, d.threshold,
                          d.samples_since_training - inc.n < d.threshold AND d.samples_since_training >= d.threshold
                          AS crossed
            """),
                    {"ids": ids, "ns": [added[i] for i in ids]},
                )
            ).all()
            crossings = [
                ThresholdCrossing(
                    dataset_id=r.dataset_id,
                    model_type=r.model_type,
                    crossing=r.crossings,
                    samples_since_training=r.samples_since_training,
                    threshold=r.threshold,
                )
                for r in rows
                if r.crossed
            ]
        return SampleIngest(
            stored_batches=len(fresh),
            stored_samples=len(records),
            duplicates=duplicates,
            mismatched=mismatched,
            crossings=sorted(crossings, key=lambda c: c.dataset_id),
        )

    async def watermark(self, dataset_id: str) -> int:
        """The id of the newest stored sample (0 for none): a training uses ids up to it."""
        value = await self.session.scalar(
            select(func.coalesce(func.max(TrainingSampleRow.id), 0)).where(TrainingSampleRow.dataset_id == dataset_id)
        )
        return int(value or 0)

    async def load(self, dataset_id: str, *, up_to: int) -> list[dict[str, Any]]:
        """The dataset's samples with id <= `up_to`, oldest first."""
        rows = await self.session.scalars(
            select(TrainingSampleRow.payload)
            .where(TrainingSampleRow.dataset_id == dataset_id, TrainingSampleRow.id <= up_to)
            .order_by(TrainingSampleRow.id)
        )
        return [dict(p) for p in rows]


class JobRepository:
    def __init__(self, session: AsyncSession, *, ageing_step: timedelta = DEFAULT_AGEING_STEP) -> None:
        self.session = session
        self.ageing_step = ageing_step

    async def insert(
        self,
        *,
        dataset_id: str,
        model_type: str,
        priority: int,
        trigger_event_ids: Iterable[str],
        max_attempts: int = 3,
        source: str = "kafka",
    ) -> Job:
        """A new waiting job. Raises `IntegrityError` when one already waits for the pair."""
        job_id = uuid.uuid4()
        now = await self.session.scalar(select(func.now()))
        assert now is not None
        row = (
            await self.session.execute(
                insert(TrainingJobRow)
                .values(
                    id=job_id,
                    dataset_id=dataset_id,
                    model_type=model_type,
                    priority=priority,
                    max_attempts=max_attempts,
                    rank_at=now - priority * self.ageing_step,
                    dedupe_key=f"{dataset_id}/{model_type}",
                )
                .returning(TrainingJobRow)
            )
        ).scalar_one()
        triggers = list(trigger_event_ids)
        if triggers:
            await self.session.execute(
                insert(JobTriggerRow),
                [{"event_id": e, "job_id": job_id, "priority": priority, "source": source} for e in triggers],
            )
        return _job(row, triggers)

    async def admit(self, requests: Sequence[TriggerRequest]) -> list[Admission]:
        """Admit triggers in order by the contract's rules, in this transaction (one statement
        for all of them; see migration 0002 for the rules themselves)."""
        if not requests:
            return []
        rows = (
            await self.session.execute(
                text("""
            SELECT e.ord, a.admitted_job, a.outcome, a.job_priority, a.job_attempts
            FROM unnest(CAST(:events AS text[]), CAST(:datasets AS text[]), CAST(:types AS text[]),
                        CAST(:priorities AS smallint[]), CAST(:sources AS text[]), CAST(:max_attempts AS integer[]))
                 WITH ORDINALITY AS e(event_id, dataset_id, model_type, priority, source, max_attempts, ord)
            CROSS JOIN LATERAL fcl_admit_trigger(e.event_id, e.dataset_id, e.model_type, e.priority,
                                                 e.max_attempts, :ageing, e.source) AS a
            ORDER BY e.ord
        """),
                {
                    "events": [r.event_id for r in requests],
                    "datasets": [r.dataset_id for r in requests],
                    "types": [r.model_type for r in requests],
                    "priorities": [r.priority for r in requests],
                    "sources": [r.source for r in requests],
                    "max_attempts": [r.max_attempts for r in requests],
                    "ageing": self.ageing_step,
                },
            )
        ).all()
        return [
            Admission(
                request=requests[row.ord - 1],
                job_id=row.admitted_job,
                outcome=AdmissionOutcome(row.outcome),
                priority=row.job_priority,
                attempts=row.job_attempts,
            )
            for row in rows
        ]

    async def recent(self, *, limit: int = 50) -> list[Job]:
        """The newest jobs first, with their triggering event ids."""
        rows = (
            await self.session.scalars(
                select(TrainingJobRow).order_by(TrainingJobRow.created_at.desc(), TrainingJobRow.id).limit(limit)
            )
        ).all()
        triggers: dict[uuid.UUID, list[str]] = {r.id: [] for r in rows}
        for job_id, event_id in (
            await self.session.execute(
                select(JobTriggerRow.job_id, JobTriggerRow.event_id)
                .where(JobTriggerRow.job_id.in_(list(triggers)))
                .order_by(JobTriggerRow.received_at, JobTriggerRow.event_id)
            )
        ).all():
            triggers[job_id].append(event_id)
        return [_job(r, triggers[r.id]) for r in rows]

    async def get(self, job_id: uuid.UUID) -> Job | None:
        row = await self.session.get(TrainingJobRow, job_id, populate_existing=True)
        if row is None:
            return None
        return _job(row, await self._triggers(job_id))

    async def counts(self) -> dict[str, int]:
        """Jobs per status (every status present, zero when none)."""
        rows = (
            await self.session.execute(select(TrainingJobRow.status, func.count()).group_by(TrainingJobRow.status))
        ).all()
        counts = {status.value: 0 for status in JobStatus}
        counts.update({status: int(n) for status, n in rows})
        return counts

    async def running(self) -> list[Job]:
        rows = (
            await self.session.scalars(
                select(TrainingJobRow)
                .where(TrainingJobRow.status == JobStatus.IN_PROGRESS.value)
                .order_by(TrainingJobRow.started_at, TrainingJobRow.id)
            )
        ).all()
        return [_job(r) for r in rows]

    async def waiting(self, *, limit: int = 20) -> list[Job]:
        """The waiting jobs in the order workers will claim them."""
        rows = (
            await self.session.scalars(
                select(TrainingJobRow)
                .where(TrainingJobRow.status == JobStatus.QUEUED.value)
                .order_by(TrainingJobRow.rank_at, TrainingJobRow.id)
                .limit(limit)
            )
        ).all()
        return [_job(r) for r in rows]

    async def _triggers(self, job_id: uuid.UUID) -> list[str]:
        return list(
            (
                await self.session.scalars(
                    select(JobTriggerRow.event_id)
                    .where(JobTriggerRow.job_id == job_id)
                    .order_by(JobTriggerRow.received_at, JobTriggerRow.event_id)
                )
            ).all()
        )


# The best waiting job: an index scan of ix_training_jobs_claim (tested with EXPLAIN).
CLAIM_CANDIDATE_SQL = """
    SELECT id FROM training_jobs
    WHERE status = 'queued' AND run_after <= now() AND NOT (model_type = ANY(CAST(:excluded AS text[])))
      AND NOT EXISTS (SELECT 1 FROM training_jobs r WHERE r.dataset_id = training_jobs.dataset_id
                      AND r.model_type = training_jobs.model_type AND r.status = 'in_progress')
    ORDER BY rank_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""


class JobStateConflict(Exception):
    """The job is not in a state that allows the operation."""


class QueueRepository:
    """What trainer workers do to jobs, each write checked against the lease token: a worker that
    lost its lease (it expired and another worker took the job) can record nothing.

    A job that goes back to the queue (retry, lease expiry, drain) while another job of the same
    dataset and model type already waits is merged into that one: its triggers move over and the
    waiting job takes the higher priority, so there is still one waiting job per pair and nothing
    that asked for a training is lost."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _owned(self, job_id: uuid.UUID, token: uuid.UUID) -> TrainingJobRow | None:
        return (
            await self.session.scalars(
                select(TrainingJobRow)
                .where(
                    TrainingJobRow.id == job_id,
                    TrainingJobRow.lease_token == token,
                    TrainingJobRow.status == JobStatus.IN_PROGRESS.value,
                )
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).first()

    async def owns(self, job_id: uuid.UUID, token: uuid.UUID) -> bool:
        """Whether `token` still holds the job's lease; locks the job row for this transaction."""
        return await self._owned(job_id, token) is not None

    async def _job(self, row: TrainingJobRow) -> Job:
        await self.session.flush()  # `get` reloads the row (populate_existing) with its triggers
        return await JobRepository(self.session).get(row.id)  # type: ignore[return-value]

    async def claim(self, *, worker: str, lease: timedelta, caps: dict[str, int] | None = None) -> Job | None:
        """The best waiting job (highest priority, then oldest, with ageing), skipping model types
        at their cap of running jobs across all workers and follow-ups whose dataset still trains;
        one short transaction."""
        excluded: list[str] = []
        if caps:
            # Claims serialise while caps apply, so two workers cannot both take the last slot.
            await self.session.execute(select(func.pg_advisory_xact_lock(func.hashtext("fcl-claim-caps"))))
            running = dict(
                (
                    await self.session.execute(
                        select(TrainingJobRow.model_type, func.count())
                        .where(TrainingJobRow.status == JobStatus.IN_PROGRESS.value)
                        .group_by(TrainingJobRow.model_type)
                    )
                ).all()
            )
            excluded = [t for t, cap in caps.items() if running.get(t, 0) >= cap]
        token = uuid.uuid4()
        row = (
            (
                await self.session.execute(
                    text(f"""
            WITH next AS ({CLAIM_CANDIDATE_SQL})
            UPDATE training_jobs AS j
            SET status = 'in_progress', attempts = j.attempts + 1, lease_owner = :worker,
                lease_token = :token, lease_expires_at = now() + :lease, started_at = now(),
                updated_at = now(), progress = 0, cancel_requested = false
            FROM next WHERE j.id = next.id
            RETURNING j.*, ARRAY(SELECT t.event_id FROM job_triggers t WHERE t.job_id = j.id
                                 ORDER BY t.received_at, t.event_id) AS trigger_event_ids
        """),
                    {"worker": worker, "token": token, "lease": lease, "excluded": excluded},
                )
            )
            .mappings()
            .first()
        )
        return _job_from_mapping(row) if row else None

    async def heartbeat(
        self, job_id: uuid.UUID, token: uuid.UUID, *, lease: timedelta, progress: float | None = None
    ) -> tuple[bool, bool]:
        """Extend the lease; (still ours, cancel requested)."""
        row = (
            await self.session.execute(
                update(TrainingJobRow)
                .where(
                    TrainingJobRow.id == job_id,
                    TrainingJobRow.lease_token == token,
                    TrainingJobRow.status == JobStatus.IN_PROGRESS.value,
                )
                .values(
                    lease_expires_at=func.now() + lease,
                    updated_at=func.now(),
                    progress=func.coalesce(progress, TrainingJobRow.progress),
                )
                .returning(TrainingJobRow.cancel_requested)
            )
        ).first()
        return (row is not None, bool(row[0]) if row else False)

    async def complete(self, job_id: uuid.UUID, token: uuid.UUID, *, model_version: int | None) -> Job | None:
        """Mark the job completed if `token` still holds its lease (one statement)."""
        row = (
            (
                await self.session.execute(
                    text("""
            UPDATE training_jobs AS j
            SET status = 'completed', model_version = :version, progress = 1.0, finished_at = now(),
                updated_at = now(), lease_token = NULL, lease_expires_at = NULL
            WHERE j.id = :id AND j.lease_token = :token AND j.status = 'in_progress'
            RETURNING j.*, ARRAY(SELECT t.event_id FROM job_triggers t WHERE t.job_id = j.id
                                 ORDER BY t.received_at, t.event_id) AS trigger_event_ids
        """),
                    {"id": job_id, "token": token, "version": model_version},
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        job = _job_from_mapping(row)
        # keep the session's identity map in step with the row just changed
        cached = self.session.identity_map.get(self.session.identity_key(TrainingJobRow, job_id))  # type: ignore[arg-type]
        if cached is not None:
            self.session.expire(cached)
        return job

    async def fail(
        self, job_id: uuid.UUID, token: uuid.UUID, *, error_type: str, message: str, retry_in: timedelta | None
    ) -> tuple[Job, Job | None] | None:
        """Record a failed attempt: back to the queue after `retry_in` while attempts remain (None:
        not worth retrying), else failed for good. Returns (this job, the waiting job it was merged
        into or None), or None when the lease is no longer ours."""
        row = await self._owned(job_id, token)
        if row is None:
            return None
        row.error_type, row.error_message = error_type, message[:2000]
        if retry_in is not None and row.attempts < row.max_attempts:
            return await self._requeue(row, run_after_delay=retry_in, attempts=row.attempts)
        row.status = JobStatus.FAILED.value
        row.finished_at = row.updated_at = await self._now()
        row.lease_token = row.lease_expires_at = None
        return await self._job(row), None

    async def release(self, job_id: uuid.UUID, token: uuid.UUID) -> tuple[Job, Job | None] | None:
        """Put a job back without counting the attempt (the worker is shutting down)."""
        row = await self._owned(job_id, token)
        if row is None:
            return None
        return await self._requeue(row, run_after_delay=timedelta(0), attempts=max(0, row.attempts - 1))

    async def finish_cancelled(self, job_id: uuid.UUID, token: uuid.UUID) -> Job | None:
        row = await self._owned(job_id, token)
        if row is None:
            return None
        row.status = JobStatus.CANCELLED.value
        row.finished_at = row.updated_at = await self._now()
        row.lease_token = row.lease_expires_at = None
        return await self._job(row)

    async def _locked(self, job_id: uuid.UUID) -> TrainingJobRow | None:
        """The job's row, locked for this transaction."""
        return (
            await self.session.scalars(
                select(TrainingJobRow)
                .where(TrainingJobRow.id == job_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).first()

    async def cancel(self, job_id: uuid.UUID) -> Job | None:
        """A waiting job is cancelled at once; a running one is asked to stop (its worker stops
        the training and records the cancellation); a finished one is left as it is."""
        row = await self._locked(job_id)
        if row is None:
            return None
        if row.status == JobStatus.QUEUED.value:
            row.status = JobStatus.CANCELLED.value
            row.finished_at = row.updated_at = await self._now()
        elif row.status == JobStatus.IN_PROGRESS.value:
            row.cancel_requested = True
            row.updated_at = await self._now()
        return await self._job(row)

    async def retry(self, job_id: uuid.UUID, *, extra_attempts: int) -> Job | None:
        """Put a failed or cancelled job back in the queue with `extra_attempts` more attempts.
        Raises `JobStateConflict` when the job is not failed or cancelled, or when another job
        already waits for its dataset and model type (that one will train the same data)."""
        row = await self._locked(job_id)
        if row is None:
            return None
        if row.status not in (JobStatus.FAILED.value, JobStatus.CANCELLED.value):
            raise JobStateConflict(f"job {job_id} is {row.status}; only a failed or cancelled job can be retried")
        waiting = await self.session.scalar(
            select(TrainingJobRow.id).where(
                TrainingJobRow.dedupe_key == row.dedupe_key, TrainingJobRow.status == JobStatus.QUEUED.value
            )
        )
        if waiting is not None:
            raise JobStateConflict(
                f"job {waiting} already waits for dataset {row.dataset_id} "
                f"({row.model_type}); it will train the same data"
            )
        now = await self._now()
        row.status, row.run_after, row.updated_at = JobStatus.QUEUED.value, now, now
        row.max_attempts = row.attempts + max(1, extra_attempts)
        row.finished_at = row.started_at = None
        row.cancel_requested, row.progress = False, None
        row.error_type = row.error_message = None
        return await self._job(row)

    async def figures(self) -> tuple[list[QueueFigure], list[TrainingFigure]]:
        """For /metrics: jobs per model type and status with the age of the oldest in that state,
        and training attempts per model type and outcome with their total seconds."""
        queue = [
            QueueFigure(
                model_type=r.model_type,
                status=r.status,
                jobs=int(r.jobs),
                oldest_age_seconds=float(r.oldest) if r.oldest is not None else None,
            )
            for r in (
                await self.session.execute(
                    text("""
                    SELECT model_type, status, count(*) AS jobs,
                           extract(epoch FROM now() - min(CASE WHEN status = 'queued' THEN created_at
                                                               WHEN status = 'in_progress' THEN started_at
                                                               ELSE finished_at END)) AS oldest
                    FROM training_jobs GROUP BY model_type, status ORDER BY model_type, status
                 """)
                )
            ).all()
        ]
        training = [
            TrainingFigure(
                model_type=r.model_type,
                outcome=r.status,
                attempts=int(r.attempts),
                seconds_total=float(r.seconds or 0.0),
            )
            for r in (
                await self.session.execute(
                    text("""
                        SELECT model_type, status, count(*) AS attempts, sum(duration_seconds) AS seconds
                        FROM training_events GROUP BY model_type, status ORDER BY model_type, status
                    """)
                )
            ).all()
        ]
        return queue, training

    async def expire_leases(self, *, limit: int = 100) -> list[tuple[Job, Job | None]]:
        """Jobs whose worker stopped renewing its lease: back to the queue (the lost attempt
        counts) or failed when no attempt is left."""
        rows = (
            await self.session.scalars(
                select(TrainingJobRow)
                .where(
                    TrainingJobRow.status == JobStatus.IN_PROGRESS.value, TrainingJobRow.lease_expires_at < func.now()
                )
                .order_by(TrainingJobRow.lease_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        ).all()
        out = []
        for row in rows:
            row.error_type, row.error_message = "LeaseExpired", f"worker {row.lease_owner} stopped renewing its lease"
            if row.attempts < row.max_attempts:
                out.append(await self._requeue(row, run_after_delay=timedelta(0), attempts=row.attempts))
            else:
                row.status = JobStatus.FAILED.value
                row.finished_at = row.updated_at = await self._now()
                row.lease_token = row.lease_expires_at = None
                out.append((await self._job(row), None))
        return out

    async def _now(self) -> datetime:
        now = await self.session.scalar(select(func.now()))
        assert now is not None
        return now

    async def _requeue(
        self, row: TrainingJobRow, *, run_after_delay: timedelta, attempts: int
    ) -> tuple[Job, Job | None]:
        now = await self._now()
        waiting = (
            await self.session.scalars(
                select(TrainingJobRow)
                .where(
                    TrainingJobRow.dedupe_key == row.dedupe_key,
                    TrainingJobRow.status == JobStatus.QUEUED.value,
                    TrainingJobRow.id != row.id,
                )
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).first()
        row.lease_token = row.lease_expires_at = None
        row.lease_owner = None
        row.attempts, row.updated_at, row.progress = attempts, now, None
        if waiting is None:
            row.status, row.run_after = JobStatus.QUEUED.value, now + run_after_delay
            return await self._job(row), None
        # Merge into the waiting job: it inherits the triggers and the higher priority.
        await self.session.execute(
            update(JobTriggerRow).where(JobTriggerRow.job_id == row.id).values(job_id=waiting.id)
        )
        waiting.priority = max(waiting.priority, row.priority)
        waiting.rank_at = min(waiting.rank_at, row.rank_at)
        waiting.updated_at = now
        row.status, row.finished_at = JobStatus.CANCELLED.value, now
        row.error_type, row.error_message = "Merged", f"merged into waiting job {waiting.id}"
        return await self._job(row), await self._job(waiting)


class TrainingEventRepository:
    """One row per attempt, written when the attempt ends (with its outcome)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        job_id: uuid.UUID,
        attempt: int,
        dataset_id: str,
        model_type: str,
        status: str,
        worker: str,
        started_at: datetime,
        duration_seconds: float,
        fit_seconds: float | None = None,
        sample_count: int | None = None,
        dataset_watermark: int | None = None,
        metrics: dict[str, Any] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        model_version: int | None = None,
        validation_passed: bool | None = None,
        promoted: bool | None = None,
    ) -> uuid.UUID:
        event_id = uuid.uuid4()
        await self.session.execute(
            insert(TrainingEventRow)
            .values(
                id=event_id,
                job_id=job_id,
                attempt=attempt,
                dataset_id=dataset_id,
                model_type=model_type,
                status=status,
                worker=worker,
                started_at=started_at,
                finished_at=func.now(),
                duration_seconds=duration_seconds,
                fit_seconds=fit_seconds,
                sample_count=sample_count,
                dataset_watermark=dataset_watermark,
                metrics=metrics or {},
                error_type=error_type,
                error_message=(error_message or "")[:2000] or None,
                model_version=model_version,
                validation_passed=validation_passed,
                promoted=promoted,
            )
            .on_conflict_do_nothing(index_elements=["job_id", "attempt"])
        )
        return event_id

    async def set_version(
        self, event_id: uuid.UUID, *, model_version: int, validation_passed: bool, promoted: bool
    ) -> None:
        await self.session.execute(
            update(TrainingEventRow)
            .where(TrainingEventRow.id == event_id)
            .values(model_version=model_version, validation_passed=validation_passed, promoted=promoted)
        )

    async def get(self, event_id: uuid.UUID) -> TrainingEvent | None:
        row = await self.session.get(TrainingEventRow, event_id)
        return _training_event(row) if row else None

    async def for_job(self, job_id: uuid.UUID) -> list[TrainingEvent]:
        rows = (
            await self.session.scalars(
                select(TrainingEventRow).where(TrainingEventRow.job_id == job_id).order_by(TrainingEventRow.attempt)
            )
        ).all()
        return [_training_event(r) for r in rows]

    async def page(
        self,
        *,
        limit: int,
        model_type: str | None = None,
        status: str | None = None,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[TrainingEvent]:
        """Newest first by (started_at, id); `before` is the last row of the previous page."""
        query = select(TrainingEventRow)
        if model_type is not None:
            query = query.where(TrainingEventRow.model_type == model_type)
        if status is not None:
            query = query.where(TrainingEventRow.status == status)
        if before is not None:
            query = query.where(
                func.row(TrainingEventRow.started_at, TrainingEventRow.id) < func.row(before[0], before[1])
            )
        query = query.order_by(TrainingEventRow.started_at.desc(), TrainingEventRow.id.desc()).limit(limit)
        return [_training_event(r) for r in (await self.session.scalars(query)).all()]

    async def latest_per_model_type(self, model_types: Iterable[str]) -> dict[str, TrainingEvent]:
        """Each model type's newest training event: one statement, an index lookup per type."""
        newest = (
            select(TrainingEventRow.id)
            .where(TrainingEventRow.model_type == text("t.model_type"))
            .order_by(TrainingEventRow.started_at.desc(), TrainingEventRow.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        types = select(func.unnest(cast(list(model_types), ARRAY(String))).label("model_type")).subquery("t")
        rows = (
            await self.session.scalars(
                select(TrainingEventRow).where(TrainingEventRow.id.in_(select(newest).select_from(types)))
            )
        ).all()
        return {r.model_type: _training_event(r) for r in rows}


class ModelVersionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, new: NewModelVersion) -> ModelVersion:
        """Record a version numbered one above its model type's newest. Concurrent adds for one
        type serialise on a transaction-level advisory lock, so numbers never collide."""
        await self.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext("model_versions:" + new.model_type)))
        )
        latest = await self.session.scalar(
            select(func.coalesce(func.max(ModelVersionRow.version), 0)).where(
                ModelVersionRow.model_type == new.model_type
            )
        )
        values = {f: getattr(new, f) for f in NewModelVersion.__dataclass_fields__}
        row = (
            await self.session.execute(
                insert(ModelVersionRow).values(version=int(latest or 0) + 1, **values).returning(ModelVersionRow)
            )
        ).scalar_one()
        return _version(row)

    async def get(self, model_type: str, version: int) -> ModelVersion | None:
        row = await self.session.get(ModelVersionRow, (model_type, version))
        return _version(row) if row else None

    async def for_training_event(self, training_event_id: uuid.UUID) -> ModelVersion | None:
        row = (
            await self.session.scalars(
                select(ModelVersionRow).where(ModelVersionRow.training_event_id == training_event_id)
            )
        ).first()
        return _version(row) if row else None

    async def list(self, model_type: str | None = None) -> list[ModelVersion]:
        query = select(ModelVersionRow).order_by(ModelVersionRow.model_type, ModelVersionRow.version.desc())
        if model_type is not None:
            query = query.where(ModelVersionRow.model_type == model_type)
        return [_version(r) for r in (await self.session.scalars(query)).all()]


class ChampionMoveConflict(Exception):
    """The champion changed since the caller looked: validate against the new one."""


class ChampionRepository:
    """The append-only champion ledger; the newest row per model type is the champion."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current(self, model_type: str) -> ChampionMove | None:
        row = (
            await self.session.scalars(
                select(ChampionLedgerRow)
                .where(ChampionLedgerRow.model_type == model_type)
                .order_by(ChampionLedgerRow.seq.desc())
                .limit(1)
            )
        ).first()
        return _move(row) if row else None

    async def history(self, model_type: str) -> list[ChampionMove]:
        rows = (
            await self.session.scalars(
                select(ChampionLedgerRow)
                .where(ChampionLedgerRow.model_type == model_type)
                .order_by(ChampionLedgerRow.seq)
            )
        ).all()
        return [_move(r) for r in rows]

    async def move(
        self, *, model_type: str, version: int, expected: ChampionMove | None, reason: ChampionReason
    ) -> ChampionMove:
        """Make `version` the champion only if the champion is still `expected` (compare-and-swap:
        the unique (model_type, seq) refuses a second move from the same state)."""
        seq = (expected.seq if expected else 0) + 1
        try:
            async with self.session.begin_nested():
                row = (
                    await self.session.execute(
                        insert(ChampionLedgerRow)
                        .values(
                            model_type=model_type,
                            seq=seq,
                            version=version,
                            previous_version=expected.version if expected else None,
                            reason=reason.value,
                            event_id=uuid.uuid4(),
                        )
                        .returning(ChampionLedgerRow)
                    )
                ).scalar_one()
        except IntegrityError as exc:
            if "uq_champion_ledger_model_type_seq" in str(exc.orig):
                raise ChampionMoveConflict(f"the {model_type} champion moved since it was read") from exc
            raise
        return _move(row)

    async def all_current(self) -> dict[str, ChampionMove]:
        newest = (
            select(ChampionLedgerRow.model_type, func.max(ChampionLedgerRow.seq).label("seq"))
            .group_by(ChampionLedgerRow.model_type)
            .subquery()
        )
        rows = (
            await self.session.scalars(
                select(ChampionLedgerRow).join(
                    newest,
                    (ChampionLedgerRow.model_type == newest.c.model_type) & (ChampionLedgerRow.seq == newest.c.seq),
                )
            )
        ).all()
        return {r.model_type: _move(r) for r in rows}

    async def rollback(self, model_type: str) -> ChampionMove | None:
        """Make the champion before the current one the champion again. Rollbacks stack: after
        v1, v2, v3 were promoted, one rollback serves v2, a second v1. Returns None when there is
        no earlier champion to go back to; raises `ChampionMoveConflict` when another move won."""
        moves = await self.history(model_type)
        served: list[int] = []
        for move in moves:
            if move.reason is ChampionReason.ROLLBACK and move.version in served:
                while served[-1] != move.version:
                    served.pop()
            else:
                served.append(move.version)
        if len(served) < 2:
            return None
        return await self.move(
            model_type=model_type, version=served[-2], expected=moves[-1], reason=ChampionReason.ROLLBACK
        )


class ValidationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        training_event_id: uuid.UUID,
        model_type: str,
        candidate_version: int | None,
        baseline_version: int | None,
        checks: Sequence[ValidationCheck],
    ) -> None:
        if not checks:
            return
        await self.session.execute(
            insert(ValidationResultRow),
            [
                {
                    "training_event_id": training_event_id,
                    "position": i,
                    "model_type": model_type,
                    "candidate_version": candidate_version,
                    "baseline_version": baseline_version,
                    "kind": c.kind,
                    "metric": c.metric,
                    "value": c.value,
                    "baseline": c.baseline,
                    "threshold": c.threshold,
                    "direction": c.direction.value,
                    "passed": c.passed,
                }
                for i, c in enumerate(checks)
            ],
        )

    async def for_training_event(self, training_event_id: uuid.UUID) -> list[ValidationCheck]:
        rows = (
            await self.session.scalars(
                select(ValidationResultRow)
                .where(ValidationResultRow.training_event_id == training_event_id)
                .order_by(ValidationResultRow.position)
            )
        ).all()
        return [
            ValidationCheck(
                metric=r.metric,
                value=r.value,
                baseline=r.baseline,
                threshold=r.threshold,
                direction=Direction(r.direction),
                passed=r.passed,
                kind=r.kind,
            )
            for r in rows
        ]


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, topic: str, key: str | None, payload: dict[str, Any]) -> OutboxMessage:
        """Queue an event; its payload's `event_id` (made here when absent) is the outbox key."""
        event_id = uuid.UUID(str(payload.setdefault("event_id", str(uuid.uuid4()))))
        row = (
            await self.session.execute(
                insert(OutboxRow).values(event_id=event_id, topic=topic, key=key, payload=payload).returning(OutboxRow)
            )
        ).scalar_one()
        return _outbox(row)

    async def add_many(self, messages: Sequence[tuple[str, str | None, dict[str, Any]]]) -> int:
        """Queue (topic, key, payload) events in ONE statement, in order; as `add`, each payload's
        `event_id` (made here when absent) is its outbox key."""
        if not messages:
            return 0
        ids, topics, keys, payloads = [], [], [], []
        for topic, key, payload in messages:
            ids.append(str(uuid.UUID(str(payload.setdefault("event_id", str(uuid.uuid4()))))))
            topics.append(topic)
            keys.append(key)
            payloads.append(json.dumps(payload, separators=(",", ":")))
        result = await self.session.execute(
            text("""
            INSERT INTO outbox (event_id, topic, key, payload)
            SELECT m.event_id, m.topic, m.key, CAST(m.payload AS jsonb)
            FROM unnest(CAST(:ids AS uuid[]), CAST(:topics AS text[]), CAST(:keys AS text[]),
                        CAST(:payloads AS text[])) WITH ORDINALITY AS m(event_id, topic, key, payload, ord)
            ORDER BY m.ord
        """),
            {"ids": ids, "topics": topics, "keys": keys, "payloads": payloads},
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def pending(self, limit: int = 500) -> list[OutboxMessage]:
        """The oldest unpublished messages, in order; locked so two relays never send one twice
        at the same time (a crash between send and mark still resends: at-least-once)."""
        rows = (
            await self.session.scalars(
                select(OutboxRow)
                .where(OutboxRow.published_at.is_(None))
                .order_by(OutboxRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        return [_outbox(r) for r in rows]

    async def pending_encoded(self, limit: int = 500) -> list[EncodedOutboxMessage]:
        """As `pending`, with each payload as its JSON text: what the relay sends as is, without
        decoding and encoding it again."""
        rows = (
            await self.session.execute(
                text("""
            SELECT id, topic, key, CAST(payload AS text) AS payload_json FROM outbox
            WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
        """),
                {"limit": limit},
            )
        ).all()
        return [EncodedOutboxMessage(r.id, r.topic, r.key, r.payload_json) for r in rows]

    async def mark_published(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        result = await self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(list(ids)), OutboxRow.published_at.is_(None))
            .values(published_at=func.now())
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class WorkerRepository:
    """Trainer workers announce themselves; `/training-status` lists them."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def beat(
        self, *, worker_id: str, hostname: str, pid: int, current_job_ids: Sequence[uuid.UUID], info: dict[str, Any]
    ) -> None:
        current = current_job_ids[0] if current_job_ids else None
        info = {**info, "running_jobs": [str(j) for j in current_job_ids]}
        stmt = insert(WorkerHeartbeatRow).values(
            worker_id=worker_id, hostname=hostname, pid=pid, current_job_id=current, info=info
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["worker_id"],
                set_={"last_seen_at": func.now(), "current_job_id": current, "info": info, "pid": pid},
            )
        )

    async def remove(self, worker_id: str) -> None:
        await self.session.execute(delete(WorkerHeartbeatRow).where(WorkerHeartbeatRow.worker_id == worker_id))

    async def seen_since(self, seconds: float) -> list[WorkerHeartbeat]:
        rows = (
            await self.session.scalars(
                select(WorkerHeartbeatRow)
                .where(WorkerHeartbeatRow.last_seen_at > func.now() - timedelta(seconds=seconds))
                .order_by(WorkerHeartbeatRow.worker_id)
            )
        ).all()
        return [
            WorkerHeartbeat(
                worker_id=r.worker_id,
                hostname=r.hostname,
                pid=r.pid,
                started_at=r.started_at,
                last_seen_at=r.last_seen_at,
                current_job_id=r.current_job_id,
                info=dict(r.info),
            )
            for r in rows
        ]
