"""Repositories: the reads of the service and the writes that are not a job's lifecycle (samples,
versions, champions, validation checks, the outbox, worker heartbeats). A job's lifecycle is
`storage.queue`'s alone.

Each repository works inside the caller's unit of work (`Database.transaction()`), so several
of them can write in one transaction (a version, its checks and its champion move). They return
entities from `storage.entities`, never ORM rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, CursorResult, String, cast, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contract import limits
from contract.enums import ChampionReason, JobStatus
from contract.events import ModelVersionEvent, ValidationCheck, rfc3339
from contract.topics import Topic
from storage.entities import (
    ChampionMove,
    Dataset,
    EncodedOutboxMessage,
    Job,
    ModelVersion,
    NewModelVersion,
    NewSampleBatch,
    OutboxFigure,
    ParkedOutboxRow,
    QueueFigure,
    SampleIngest,
    ThresholdCrossing,
    TrainingEvent,
    TrainingFigure,
    WorkerHeartbeat,
)
from storage.errors import AlreadyChampion, ChampionMoved, IntegrityViolation, VersionDeleted, wrap
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

# An outbox row before it is written: (topic without prefix, key, payload).
OutboxEntry = tuple[str, str | None, dict[str, Any]]


class DatasetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, dataset_id: str) -> Dataset | None:
        row = await self.session.get(DatasetRow, dataset_id)
        return row.to_entity() if row else None

    async def ready(self) -> list[Dataset]:
        """Datasets whose counter has reached their threshold."""
        rows = (
            await self.session.scalars(
                select(DatasetRow)
                .where(DatasetRow.samples_since_training >= DatasetRow.threshold)
                .order_by(DatasetRow.dataset_id)
            )
        ).all()
        return [r.to_entity() for r in rows]

    async def consume_up_to(self, dataset_id: str, watermark: int) -> Dataset:
        """A training that used every sample with id <= `watermark` finished: take the samples it
        used and had not been used before off the counter (those that arrived during it still
        count; never below zero), and remember the watermark."""
        row = (
            await self.session.scalars(
                select(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).one()
        if watermark <= row.trained_watermark:
            return row.to_entity()
        used = await self.session.scalar(
            select(func.count())
            .select_from(TrainingSampleRow)
            .where(
                TrainingSampleRow.dataset_id == dataset_id,
                TrainingSampleRow.id > row.trained_watermark,
                TrainingSampleRow.id <= watermark,
            )
        )
        updated = (
            await self.session.execute(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .values(
                    samples_since_training=func.greatest(DatasetRow.samples_since_training - int(used or 0), 0),
                    trained_watermark=watermark,
                    last_trained_at=func.now(),
                    updated_at=func.now(),
                )
                .returning(DatasetRow)
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        return updated.to_entity()


class SampleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ingest(self, batches: Sequence[NewSampleBatch], *, thresholds: dict[str, int]) -> SampleIngest:
        """Store many samples events in this transaction: datasets are created on first sight
        (threshold from `thresholds` by model type), a batch whose event id was stored before is
        skipped, a batch naming another model type or sample shape than its dataset's is refused
        (the first shape seen is the dataset's), samples are
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
        datasets = {
            row.dataset_id: row
            for row in (
                await self.session.execute(
                    select(DatasetRow.dataset_id, DatasetRow.model_type, DatasetRow.sample_shape)
                    .where(DatasetRow.dataset_id.in_(dataset_ids))
                    .order_by(DatasetRow.dataset_id)
                    .with_for_update()
                )
            ).all()
        }
        # A batch of another model type or another sample shape than its dataset's is refused;
        # the first shape a dataset sees becomes its own.
        refused: dict[str, str] = {}
        shapes = {d: row.sample_shape for d, row in datasets.items()}
        new_shapes: dict[str, dict[str, Any]] = {}
        for b in batches:
            own = datasets[b.dataset_id].model_type
            if own != b.model_type:
                refused[b.event_id] = f"dataset {b.dataset_id!r} holds {own} samples, not {b.model_type}"
                continue
            shape = shapes.get(b.dataset_id)
            if shape is None and b.shape:
                shapes[b.dataset_id] = new_shapes[b.dataset_id] = dict(b.shape)
            elif shape is not None and b.shape and shape != b.shape:
                refused[b.event_id] = (
                    f"dataset {b.dataset_id!r} holds samples of shape {json.dumps(shape)[:300]}, "
                    f"not {json.dumps(b.shape)[:300]} (the samples of a dataset share one shape)"
                )
        if new_shapes:
            await self.session.execute(
                text("""
                UPDATE datasets AS d SET sample_shape = CAST(s.shape AS jsonb)
                FROM unnest(CAST(:ids AS text[]), CAST(:shapes AS text[])) AS s(dataset_id, shape)
                WHERE d.dataset_id = s.dataset_id
            """),
                {"ids": list(new_shapes), "shapes": [json.dumps(v) for v in new_shapes.values()]},
            )
        candidates: dict[str, NewSampleBatch] = {}
        for b in batches:
            if b.event_id not in refused:
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
        duplicates = [b.event_id for b in batches if b.event_id not in refused and b.event_id not in new_ids]
        records = [
            (b.dataset_id, b.event_id, sample if isinstance(sample, str) else json.dumps(sample))
            for b in fresh
            for sample in b.samples
        ]
        if records:
            raw = await (await self.session.connection()).get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.copy_records_to_table(
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
            refused=refused,
            crossings=sorted(crossings, key=lambda c: c.dataset_id),
        )

    async def watermark(self, dataset_id: str) -> int:
        """The id of the newest stored sample (0 for none): a training uses ids up to it."""
        value = await self.session.scalar(
            select(func.coalesce(func.max(TrainingSampleRow.id), 0)).where(TrainingSampleRow.dataset_id == dataset_id)
        )
        return int(value or 0)


class JobRepository:
    """Reads of jobs (their changes are `storage.queue`'s)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def triggers_under(self, prefix: str) -> list[str]:
        """The ids of the triggers that are `prefix` or start with `prefix` + '#' (the event ids an
        HTTP Idempotency-Key made), after locking `prefix` for this transaction so that two
        requests with one key are judged one after the other."""
        await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"fcl-key:{prefix}"})
        rows = await self.session.scalars(
            text("""
            SELECT event_id FROM job_triggers
            WHERE event_id = :prefix OR left(event_id, length(:prefix) + 1) = :prefix || '#'
        """),
            {"prefix": prefix},
        )
        return list(rows)

    async def get(self, job_id: uuid.UUID) -> Job | None:
        row = await self.session.get(TrainingJobRow, job_id, populate_existing=True)
        if row is None:
            return None
        triggers = (
            await self.session.scalars(
                select(JobTriggerRow.event_id)
                .where(JobTriggerRow.job_id == job_id)
                .order_by(JobTriggerRow.received_at, JobTriggerRow.event_id)
            )
        ).all()
        return row.to_entity(tuple(triggers))

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
        return [r.to_entity() for r in rows]

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
        return [r.to_entity() for r in rows]

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


class TrainingEventRepository:
    """Reads of the training history: one row per attempt that ended (written by storage.queue)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_id: uuid.UUID) -> TrainingEvent | None:
        row = await self.session.get(TrainingEventRow, event_id)
        return row.to_entity() if row else None

    async def for_job(self, job_id: uuid.UUID) -> list[TrainingEvent]:
        rows = (
            await self.session.scalars(
                select(TrainingEventRow).where(TrainingEventRow.job_id == job_id).order_by(TrainingEventRow.attempt)
            )
        ).all()
        return [r.to_entity() for r in rows]

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
        return [r.to_entity() for r in (await self.session.scalars(query)).all()]

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
        return {r.model_type: r.to_entity() for r in rows}


class ModelVersionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def next_version(self, model_type: str) -> int:
        """The number the next version of `model_type` gets. Holds a transaction-level advisory
        lock per model type until commit, so concurrent recorders never take the same number."""
        await self.session.execute(select(func.pg_advisory_xact_lock(func.hashtext("model_versions:" + model_type))))
        latest = await self.session.scalar(
            select(func.coalesce(func.max(ModelVersionRow.version), 0)).where(ModelVersionRow.model_type == model_type)
        )
        return int(latest or 0) + 1

    async def add(self, new: NewModelVersion, *, version: int | None = None) -> ModelVersion:
        """Record a version: `version` from `next_version` in this transaction, or the next one."""
        number = version if version is not None else await self.next_version(new.model_type)
        values = {f: getattr(new, f) for f in NewModelVersion.__dataclass_fields__}
        row = (
            await self.session.execute(
                insert(ModelVersionRow).values(version=number, **values).returning(ModelVersionRow)
            )
        ).scalar_one()
        return row.to_entity()

    async def get(self, model_type: str, version: int) -> ModelVersion | None:
        row = await self.session.get(ModelVersionRow, (model_type, version))
        return row.to_entity() if row else None

    async def for_training_event(self, training_event_id: uuid.UUID) -> ModelVersion | None:
        row = (
            await self.session.scalars(
                select(ModelVersionRow).where(ModelVersionRow.training_event_id == training_event_id)
            )
        ).first()
        return row.to_entity() if row else None

    async def list(self, model_type: str | None = None) -> list[ModelVersion]:
        query = select(ModelVersionRow).order_by(ModelVersionRow.model_type, ModelVersionRow.version.desc())
        if model_type is not None:
            query = query.where(ModelVersionRow.model_type == model_type)
        return [r.to_entity() for r in (await self.session.scalars(query)).all()]


class ChampionRepository:
    """The append-only champion ledger; the newest row per model type is the champion. Every
    move writes its `model-versions` event to the outbox in the same transaction."""

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
        return row.to_entity() if row else None

    async def history(self, model_type: str) -> list[ChampionMove]:
        rows = (
            await self.session.scalars(
                select(ChampionLedgerRow)
                .where(ChampionLedgerRow.model_type == model_type)
                .order_by(ChampionLedgerRow.seq)
            )
        ).all()
        return [r.to_entity() for r in rows]

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
        return {r.model_type: r.to_entity() for r in rows}

    async def move(
        self,
        *,
        model_type: str,
        version: int,
        expected: ChampionMove | None,
        reason: ChampionReason,
        note: str | None = None,
        actor: str | None = None,
    ) -> ChampionMove:
        """Make `version` the champion only if the champion is still `expected` (compare-and-swap:
        the unique (model_type, seq) refuses a second move from the same state; then
        `ChampionMoved`), and queue its `model-versions` event. A version the retention removed
        cannot serve (`VersionDeleted`); the retention takes the same lock per model type."""
        await lock_champion(self.session, model_type)
        deleted = await self.session.scalar(
            select(ModelVersionRow.deleted_at).where(
                ModelVersionRow.model_type == model_type, ModelVersionRow.version == version
            )
        )
        if deleted is not None:
            raise VersionDeleted(f"{model_type} version {version} was removed by the retention on {deleted:%Y-%m-%d}")
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
                            note=note,
                            actor=actor[: limits.MAX_ID_CHARS] if actor else None,
                            event_id=uuid.uuid4(),
                        )
                        .returning(ChampionLedgerRow)
                    )
                ).scalar_one()
        except Exception as exc:
            error = wrap(exc)
            if isinstance(error, IntegrityViolation) and "uq_champion_ledger_model_type_seq" in str(exc):
                raise ChampionMoved(f"the {model_type} champion moved since it was read") from exc
            raise error from exc
        move = row.to_entity()
        event = ModelVersionEvent(
            event_id=str(move.event_id),
            model_type=model_type,
            version=move.version,
            previous_version=move.previous_version,
            reason=move.reason,
            occurred_at=rfc3339(move.created_at),
        )
        await OutboxRepository(self.session).add_many(
            [(Topic.MODEL_VERSIONS, model_type, event.model_dump(mode="json"))]
        )
        return move

    async def rollback(self, model_type: str, *, actor: str | None = None) -> ChampionMove | None:
        """Make the champion before the current one the champion again. Rollbacks stack: after
        v1, v2, v3 were promoted, one rollback serves v2, a second v1. Returns None when there is
        no earlier champion to go back to; raises `ChampionMoved` when another move won."""
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
            model_type=model_type, version=served[-2], expected=moves[-1], reason=ChampionReason.ROLLBACK, actor=actor
        )

    async def promote(self, model_type: str, version: int, *, note: str, actor: str | None = None) -> ChampionMove:
        """Make a recorded version the champion by hand (reason `manual`, the operator's `note`
        kept in the ledger). `LookupError` for a version that was never recorded,
        `AlreadyChampion` when it serves already, `ChampionMoved` when another move won."""
        if await ModelVersionRepository(self.session).get(model_type, version) is None:
            raise LookupError(f"{model_type} has no version {version}")
        current = await self.current(model_type)
        if current is not None and current.version == version:
            raise AlreadyChampion(f"{model_type} version {version} is already the champion")
        return await self.move(
            model_type=model_type,
            version=version,
            expected=current,
            reason=ChampionReason.MANUAL,
            note=note,
            actor=actor,
        )

    async def ledger(self, model_type: str | None = None, limit: int = 100) -> list[ChampionMove]:
        """The newest moves first, of one model type or of all."""
        query = select(ChampionLedgerRow).order_by(ChampionLedgerRow.created_at.desc(), ChampionLedgerRow.id.desc())
        if model_type is not None:
            query = query.where(ChampionLedgerRow.model_type == model_type)
        return [r.to_entity() for r in (await self.session.scalars(query.limit(limit))).all()]


async def lock_champion(session: AsyncSession, model_type: str) -> None:
    """Serialize champion moves and the retention of one model type until the transaction ends."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("champion:" + model_type))))


class RetentionRepository:
    """Which versions the retention removes, and their artifacts' removal, in steps that can stop
    anywhere and be run again (by any worker, at the same time): a version is first marked deleted
    (it can no longer be promoted or downloaded), then its artifact is removed from the store, then
    that is recorded."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def mark(self, model_type: str, *, keep_versions: int, keep_days: float) -> list[int]:
        """Mark deleted every version of `model_type` that is not the champion, not among the
        newest `keep_versions`, and not named by a ledger move of the last `keep_days`."""
        await lock_champion(self.session, model_type)
        marked = await self.session.scalars(
            text("""
            WITH ranked AS (
                SELECT version, row_number() OVER (ORDER BY version DESC) AS newest
                FROM model_versions WHERE model_type = :t
            ), champion AS (
                SELECT version FROM champion_ledger WHERE model_type = :t ORDER BY seq DESC LIMIT 1
            )
            UPDATE model_versions v SET deleted_at = now()
            FROM ranked r
            WHERE v.model_type = :t AND v.version = r.version AND v.deleted_at IS NULL
              AND r.newest > :keep
              AND v.version IS DISTINCT FROM (SELECT version FROM champion)
              AND NOT EXISTS (
                  SELECT 1 FROM champion_ledger l
                  WHERE l.model_type = :t AND l.created_at > now() - make_interval(secs => :days * 86400)
                    AND (l.version = v.version OR l.previous_version = v.version))
            RETURNING v.version
        """),
            {"t": model_type, "keep": keep_versions, "days": keep_days},
        )
        return sorted(int(v) for v in marked)

    async def artifacts_to_remove(self, limit: int = 100) -> list[ModelVersion]:
        rows = await self.session.scalars(
            select(ModelVersionRow)
            .where(ModelVersionRow.deleted_at.is_not(None), ModelVersionRow.artifact_deleted_at.is_(None))
            .order_by(ModelVersionRow.deleted_at)
            .limit(limit)
        )
        return [r.to_entity() for r in rows.all()]

    async def artifact_removed(self, model_type: str, version: int) -> None:
        await self.session.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.model_type == model_type, ModelVersionRow.version == version)
            .values(artifact_deleted_at=func.now())
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
                    "kind": c.kind.value,
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
        return [r.to_entity() for r in rows]


class OutboxRepository:
    """Events to publish, written in the transaction of the change they announce. Every insert
    NOTIFYs `fcl_outbox` at commit (migration 0006), which wakes the relays."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, messages: Sequence[OutboxEntry]) -> int:
        """Queue (topic, key, payload) events in ONE statement, in order; each payload's
        `event_id` (made here when absent) is its outbox key, and an event id already in the
        outbox is not queued again (a redelivered poison's dead letter, a replayed crossing)."""
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
            ON CONFLICT (event_id) DO NOTHING
        """),
            {"ids": ids, "topics": topics, "keys": keys, "payloads": payloads},
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)

    async def pending_encoded(self, limit: int = 500) -> list[EncodedOutboxMessage]:
        """The oldest unpublished messages, in order, each payload as its stored JSON text (what
        the relay sends as is); locked so two relays never send one twice at the same time (a
        crash between send and mark still resends: at-least-once)."""
        rows = (
            await self.session.execute(
                text("""
            SELECT id, topic, key, CAST(payload AS text) AS payload_json FROM outbox
            WHERE published_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
        """),
                {"limit": limit},
            )
        ).all()
        return [EncodedOutboxMessage(r.id, r.topic, r.key, r.payload_json) for r in rows]

    async def unpublished(self) -> int:
        """How many rows wait to be published (parked ones not counted)."""
        return int(
            await self.session.scalar(
                text("SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL")
            )
            or 0
        )

    async def figures(self) -> OutboxFigure:
        row = (
            await self.session.execute(
                text("""
            SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending,
                   count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked
            FROM outbox WHERE published_at IS NULL
        """)
            )
        ).one()
        return OutboxFigure(pending=row.pending, parked=row.parked)

    async def parked(self) -> list[ParkedOutboxRow]:
        """The rows the relay gave up on, oldest first, with their errors (for an operator)."""
        rows = (
            await self.session.execute(
                text("""
            SELECT id, event_id, topic, key, attempts, last_error, created_at, parked_at,
                   octet_length(CAST(payload AS text)) AS payload_bytes
            FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NULL ORDER BY id
        """)
            )
        ).all()
        return [ParkedOutboxRow(**r._asdict()) for r in rows]

    async def record_failures(self, failures: Sequence[tuple[int, str]], *, park_at: int) -> int:
        """Count one refused try of each (row id, error); a row reaching `park_at` tries is
        parked. The number of rows parked now."""
        if not failures:
            return 0
        result = await self.session.execute(
            text("""
            UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = left(f.error, :limit),
                   parked_at = CASE WHEN o.attempts + 1 >= :park_at THEN now() END
            FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS f(id, error)
            WHERE o.id = f.id
            RETURNING o.parked_at IS NOT NULL AS parked
        """),
            {
                "ids": [i for i, _ in failures],
                "errors": [e for _, e in failures],
                "park_at": park_at,
                "limit": limits.MAX_MESSAGE_CHARS,
            },
        )
        return sum(1 for r in result.all() if r.parked)

    async def delete_published(self, *, older_than: float) -> int:
        """Remove rows published more than `older_than` seconds ago."""
        result = await self.session.execute(
            text("DELETE FROM outbox WHERE published_at < now() - make_interval(secs => :age)"),
            {"age": older_than},
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)

    async def mark_published(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        result = await self.session.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(list(ids)), OutboxRow.published_at.is_(None))
            .values(published_at=func.now())
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)


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
        return [r.to_entity() for r in rows]
