"""Datasets and their samples: the ingest of sample batches (stored, counted, and the
threshold crossed announced through the outbox), the counters' watermarks, and the loader a
training child reads its samples with.

The repositories work inside the caller's transaction; `load_samples` opens one plain asyncpg
connection of its own (no engine, no pool: a child reads once and exits) and reads through a
server-side cursor, a chunk at a time, so the rows are never held twice (raw and decoded). With a
window only the most recent N samples up to the watermark are read: that bounds a training's
memory whatever the dataset's size."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import func, null, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract.events import DatasetThresholdEvent, rfc3339, threshold_event_id
from fcl.contract.topics import Topic
from fcl.storage.db import asyncpg_dsn
from fcl.storage.entities import (
    Dataset,
    NewSampleBatch,
    SampleIngest,
    ThresholdCrossing,
)
from fcl.storage.errors import DRIVER_ERRORS, SchemaMismatch, wrap
from fcl.storage.models import (
    DatasetRow,
    SampleBatchRow,
    TrainingSampleRow,
)
from fcl.storage.outbox import OutboxEntry

# one statement whatever the number of ids (an IN list would be a new statement for every length)
MODEL_TYPES_SQL = "SELECT dataset_id, model_type FROM datasets WHERE dataset_id = ANY(CAST(:ids AS text[]))"
MODEL_TYPES = text(MODEL_TYPES_SQL)


class DatasetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, dataset_id: str) -> Dataset | None:
        row = await self.session.get(DatasetRow, dataset_id)
        return row.to_entity() if row else None

    async def reset_shape(self, dataset_id: str) -> Dataset | None:
        """Forget the dataset's shape: the next event's shape becomes its next shape version
        (and trainings read the samples from that event on). None for an unknown dataset."""
        row = (
            await self.session.scalars(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .values(sample_shape=null(), updated_at=func.now())
                .returning(DatasetRow)
                .execution_options(populate_existing=True)
            )
        ).first()
        return row.to_entity() if row else None

    async def model_types(self, dataset_ids: Sequence[str]) -> dict[str, str]:
        """The model type of each of these datasets that exists."""
        rows = await self.session.execute(MODEL_TYPES, {"ids": sorted(set(dataset_ids))})
        return {r.dataset_id: r.model_type for r in rows}

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
        # A batch of another model type is refused. The first shape a dataset sees becomes its
        # own; a batch that adds features to it starts the next shape version (trainings then read
        # the samples from that batch on), as does the first batch after an operator's reset;
        # any other shape is refused.
        refused: dict[str, str] = {}
        shapes = {d: row.sample_shape for d, row in datasets.items()}
        new_shapes: dict[str, dict[str, Any]] = {}
        evolved: dict[str, str] = {}  # dataset -> the event whose samples start its new shape version
        for b in batches:
            own = datasets[b.dataset_id].model_type
            if own != b.model_type:
                refused[b.event_id] = f"dataset {b.dataset_id!r} holds {own} samples, not {b.model_type}"
                continue
            shape = shapes.get(b.dataset_id)
            if shape is None and b.shape:
                shapes[b.dataset_id] = new_shapes[b.dataset_id] = dict(b.shape)
                evolved.setdefault(b.dataset_id, b.event_id)
            elif shape is not None and b.shape and shape != b.shape:
                if adds_features(shape, b.shape):
                    shapes[b.dataset_id] = new_shapes[b.dataset_id] = dict(b.shape)
                    evolved[b.dataset_id] = b.event_id
                    continue
                refused[b.event_id] = (
                    f"dataset {b.dataset_id!r} holds samples of shape {json.dumps(shape)[:300]}, "
                    f"not {json.dumps(b.shape)[:300]} (a dataset's samples share one shape; one that adds "
                    "features starts a new shape version; `fcl datasets reset-shape` resets it)"
                )
        before = {d: await self.watermark(d) for d in evolved} if evolved else {}
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
        if evolved:
            await self._start_shape_versions(evolved, before, fresh)
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

    async def _start_shape_versions(
        self, evolved: dict[str, str], before: dict[str, int], fresh: Sequence[NewSampleBatch]
    ) -> None:
        """Each dataset in `evolved` starts its next shape version at the first sample of the
        event named (stored just now): the samples before it are of the older shape. A dataset
        seen for the first time keeps version 1 from the start."""
        stored = {b.event_id for b in fresh}
        for dataset_id, event_id in evolved.items():
            if event_id not in stored:
                continue  # a duplicate: its samples were stored, and its shape counted, before
            first = await self.session.scalar(
                select(func.min(TrainingSampleRow.id)).where(
                    TrainingSampleRow.dataset_id == dataset_id,
                    TrainingSampleRow.id > before[dataset_id],
                    TrainingSampleRow.batch_event_id == event_id,
                )
            )
            if before[dataset_id] == 0 or first is None:
                continue  # the dataset's first samples: version 1 from the start
            await self.session.execute(
                update(DatasetRow)
                .where(DatasetRow.dataset_id == dataset_id)
                .values(shape_version=DatasetRow.shape_version + 1, shape_from_id=first - 1)
            )

    async def watermark(self, dataset_id: str) -> int:
        """The id of the newest stored sample (0 for none): a training uses ids up to it."""
        value = await self.session.scalar(
            select(func.coalesce(func.max(TrainingSampleRow.id), 0)).where(TrainingSampleRow.dataset_id == dataset_id)
        )
        return int(value or 0)


CHUNK_ROWS = 5000


def adds_features(shape: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when the shape `new` is `shape` with more features (and nothing else changed)."""
    old_features, new_features = shape.get("features"), new.get("features")
    if not isinstance(old_features, list) or not isinstance(new_features, list):
        return False
    same_rest = {k: v for k, v in shape.items() if k != "features"} == {k: v for k, v in new.items() if k != "features"}
    return same_rest and set(old_features) < set(new_features)


async def load_samples(
    url: str,
    dataset_id: str,
    *,
    up_to: int,
    window: int | None = None,
    after: int = 0,
    champion: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[dict[str, Any]]:
    """The dataset's samples with `after` < id <= `up_to` (the last `window` of them when given),
    oldest first, in one read-only snapshot. With `champion` ("type:version": a champion's
    reference set), from the champion's copy in reference_samples when the retention made one
    (the days it copied may have gone since)."""
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                table, key = "training_samples", "dataset_id"
                if champion is not None:
                    # Locked before the snapshot (the first query) is taken: the retention copies a
                    # reference set and drops its days in one transaction, so this snapshot sees
                    # either the copy or every day, never neither.
                    await conn.execute("LOCK TABLE training_samples IN ACCESS SHARE MODE")
                    copied = "SELECT EXISTS (SELECT 1 FROM reference_samples WHERE champion = $1)"
                    if await conn.fetchval(copied, champion):
                        table, key, dataset_id = "reference_samples", "champion", champion
                start = after
                if window is not None:
                    # The id just before the window: an index scan of (dataset_id, id), backwards.
                    after = (
                        await conn.fetchval(
                            f"SELECT id FROM {table} WHERE {key} = $1 AND id <= $2 ORDER BY id DESC OFFSET $3 LIMIT 1",
                            dataset_id,
                            up_to,
                            window,
                        )
                        or 0
                    )
                after = max(after, start)
                return [
                    json.loads(row[0])
                    async for row in conn.cursor(
                        f"SELECT payload::text FROM {table} WHERE {key} = $1 AND id > $2 AND id <= $3 ORDER BY id",
                        dataset_id,
                        after,
                        up_to,
                        prefetch=chunk_rows,
                    )
                ]
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise wrap(exc) from exc


async def trigger_namespace(session: AsyncSession) -> uuid.UUID:
    """The installation's namespace of the threshold event ids fcl makes (migration 0014)."""
    value = await session.scalar(text("SELECT trigger_namespace FROM installation"))
    if value is None:
        raise SchemaMismatch("the installation row is missing (is the database migrated? run `fcl migrate`)")
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def threshold_events(
    crossings: Sequence[ThresholdCrossing], *, priority: int, namespace: uuid.UUID
) -> list[OutboxEntry]:
    """The `dataset-threshold` event of each threshold crossed, as outbox rows (its event id is
    derived from the installation's namespace, the dataset and the crossing's number, so a
    redelivered batch announces nothing twice and no producer can send it first)."""
    events: list[OutboxEntry] = []
    for c in crossings:
        event = DatasetThresholdEvent(
            event_id=threshold_event_id(c.dataset_id, c.crossing, namespace),
            dataset_id=c.dataset_id,
            model_type=c.model_type,
            sample_count=c.samples_since_training,
            threshold=c.threshold,
            priority=priority,
        )
        events.append(
            (Topic.DATASET_THRESHOLD, c.dataset_id, event.model_dump(mode="json") | {"occurred_at": rfc3339()})
        )
    return events


# -- the sample retention (partitions by day, migrations 0018 and 0020) -----------------------------
PARTITIONS_AHEAD = 9  # today and the next 8 days have their partitions before their rows arrive
FORGET_BATCHES = 50_000  # samples-event ids forgotten per sweep at most
DAY = 86400


@dataclass(frozen=True)
class NeededRange:
    """Sample ids a training or a judgement may still read: `dataset_id`'s ids from `first` (to
    `last` when not None); `champion` ("type:version") when it is a champion's reference set."""

    dataset_id: str
    first: int
    last: int | None
    champion: str | None = None


class SampleRetention:
    """Drops whole days of samples (a partition of training_samples) once they are older than the
    retention and no dataset's training window needs any of their rows. A partition is a day wide
    unless FCL_SAMPLE_PARTITION_SECONDS says otherwise (an accelerated run); old partitions are
    found by their bounds. A champion's reference set does not keep a day: before a day it reads
    goes, its rows (its dataset's, in its range) are copied to reference_samples in the same
    transaction, and the copy goes whole once the version is no longer champion. What the
    retention keeps is then the retention's days, the windows, and one copy per champion at most,
    however long a champion stays (the months soak: a spending champion that stayed 20 days kept
    every dataset's rows of those days, a sawtooth of +40 % of the database)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure_partitions(self, count: int = PARTITIONS_AHEAD, *, width_seconds: int = DAY) -> int:
        """Create the `count` partitions from the current one on that are missing; how many were
        made."""
        made = await self.session.scalar(
            text("SELECT fcl_ensure_sample_partitions_every(now(), :width, :count)"),
            {"width": width_seconds, "count": count},
        )
        return int(made or 0)

    async def needed(self, windows: dict[str, int]) -> list[NeededRange]:
        """The sample ids a training or a judgement may still read: each dataset's newest
        `windows[model type]` samples of its newest shape (all of them when it has fewer;
        open-ended), and for each champion without a copy the samples its dataset was judged on
        (up to its watermark, within its window, of its shape). A champion's range ends at its
        watermark: a champion that stays while its dataset grows reads only the days it was judged
        on, not every day after them."""
        rows = (
            await self.session.execute(
                text("""
            SELECT d.dataset_id, GREATEST(d.shape_from_id + 1, coalesce(
                       (SELECT s.id FROM training_samples s WHERE s.dataset_id = d.dataset_id
                        ORDER BY s.id DESC OFFSET w.size - 1 LIMIT 1),
                       (SELECT min(s.id) FROM training_samples s WHERE s.dataset_id = d.dataset_id),
                       0)) AS first, CAST(NULL AS bigint) AS last, CAST(NULL AS text) AS champion
            FROM datasets d JOIN unnest(CAST(:types AS text[]), CAST(:sizes AS bigint[])) AS w(model_type, size)
                 ON w.model_type = d.model_type
            UNION ALL
            SELECT v.dataset_id, GREATEST(coalesce((v.info->>'shape_from_id')::bigint, 0) + 1, coalesce(
                       (SELECT s.id FROM training_samples s WHERE s.dataset_id = v.dataset_id
                          AND s.id <= v.dataset_watermark ORDER BY s.id DESC
                        OFFSET coalesce((v.info->>'train_window')::bigint, 1000000000000) - 1 LIMIT 1),
                       (SELECT min(s.id) FROM training_samples s WHERE s.dataset_id = v.dataset_id),
                       0)) AS first, v.dataset_watermark AS last, c.model_type || ':' || c.version AS champion
            FROM (SELECT DISTINCT ON (model_type) model_type, version FROM champion_ledger
                  ORDER BY model_type, seq DESC) c
            JOIN model_versions v ON v.model_type = c.model_type AND v.version = c.version
            WHERE to_regclass(quote_ident('reference_samples_' || c.model_type || '_' || c.version)) IS NULL
        """),
                {"types": list(windows), "sizes": list(windows.values())},
            )
        ).all()
        return [
            NeededRange(r.dataset_id, int(r.first), None if r.last is None else int(r.last), r.champion) for r in rows
        ]

    async def _reads(self, partition: str, ranges: Sequence[NeededRange]) -> bool:
        """Whether any of `ranges` reads a row of `partition`."""
        if not ranges:
            return False
        return bool(
            await self.session.scalar(
                text(f"""
                SELECT EXISTS (
                    SELECT 1 FROM unnest(CAST(:ids AS text[]), CAST(:firsts AS bigint[]), CAST(:lasts AS bigint[]))
                         AS n(dataset_id, first, last)
                    WHERE EXISTS (SELECT 1 FROM "{partition}" p WHERE p.dataset_id = n.dataset_id AND p.id >= n.first
                                    AND (n.last IS NULL OR p.id <= n.last)))
            """),
                {
                    "ids": [r.dataset_id for r in ranges],
                    "firsts": [r.first for r in ranges],
                    "lasts": [r.last for r in ranges],
                },
            )
        )

    async def copy_reference(self, reference: NeededRange) -> None:
        """Copy a champion's reference set (its dataset's rows in its range, from every day) to its
        own partition of reference_samples."""
        assert reference.champion is not None
        model_type, version = reference.champion.split(":")
        name = f"reference_samples_{model_type}_{int(version)}"
        key = f"{model_type}:{int(version)}"
        partition = f"CREATE TABLE \"{name}\" PARTITION OF reference_samples FOR VALUES IN ('{key}')"
        await self.session.execute(text(partition))
        await self.session.execute(
            text("""
            INSERT INTO reference_samples (champion, id, payload)
            SELECT :champion, id, payload FROM training_samples
            WHERE dataset_id = :dataset_id AND id >= :first AND (CAST(:last AS bigint) IS NULL OR id <= :last)
        """),
            {
                "champion": reference.champion,
                "dataset_id": reference.dataset_id,
                "first": reference.first,
                "last": reference.last,
            },
        )

    async def _detach_and_drop(self, parent: str, name: str) -> bool:
        """Detach and drop a partition; False when its parent stays locked (a reader) for 2 s.
        Detaching locks the whole table: a training reading its samples holds it for a while, and
        ingestion must not queue behind the wait. Another sweep will try again."""
        try:
            async with self.session.begin_nested():
                await self.session.execute(text("SET LOCAL lock_timeout = '2s'"))
                await self.session.execute(text(f'ALTER TABLE {parent} DETACH PARTITION "{name}"'))
                await self.session.execute(text(f'DROP TABLE "{name}"'))
        except DRIVER_ERRORS as exc:
            if wrap(exc).sqlstate != "55P03":
                raise
            return False
        return True

    async def drop_old_days(self, *, keep_days: float, windows: dict[str, int]) -> list[str]:
        """Drop each partition whose upper bound is older than `keep_days` and none of whose rows a
        dataset's window still reads, copying first the reference set of each champion that reads
        some of them; then drop the copies of versions no longer champion. The names of the days
        dropped, oldest first. Rows that landed in the default partition (a span without its
        partition) are never dropped."""
        needed = await self.needed(windows)
        windows_read = [n for n in needed if n.champion is None]
        references = [n for n in needed if n.champion is not None]
        days: Sequence[str] = (
            (
                await self.session.execute(
                    text("""
            SELECT name FROM (
                SELECT c.relname AS name, CAST(substring(pg_get_expr(c.relpartbound, c.oid)
                                                         FROM $$TO \\('([^']+)'\\)$$) AS timestamptz) AS upper
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'training_samples'::regclass
                  AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') p
            WHERE upper <= now() - make_interval(secs => :keep)
            ORDER BY upper
        """),
                    {"keep": keep_days * 86400},
                )
            )
            .scalars()
            .all()
        )
        dropped: list[str] = []
        for name in days:
            if await self._reads(name, windows_read):
                continue  # a dataset's window still reads some of its rows
            for reference in list(references):
                if await self._reads(name, [reference]):
                    await self.copy_reference(reference)
                    references.remove(reference)
            if await self._detach_and_drop("training_samples", name):
                dropped.append(name)
        await self._drop_copies_of_former_champions()
        return dropped

    async def _drop_copies_of_former_champions(self) -> None:
        former: Sequence[str] = (
            (
                await self.session.execute(
                    text("""
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'reference_samples'::regclass
              AND c.relname NOT IN (
                  SELECT 'reference_samples_' || model_type || '_' || version
                  FROM (SELECT DISTINCT ON (model_type) model_type, version FROM champion_ledger
                        ORDER BY model_type, seq DESC) champions
                  WHERE version IS NOT NULL)
        """)
                )
            )
            .scalars()
            .all()
        )
        for name in former:
            await self._detach_and_drop("reference_samples", name)

    async def forget_batches(self, *, keep_days: float, limit: int = FORGET_BATCHES) -> int:
        """Forget the ids of the samples events none of whose samples is kept any more: those
        received before the oldest partition left (and before the retention), whose rows are not
        in the default partition; the oldest `limit` of them; how many. A redelivery of such an
        event (after the retention) would be stored again: Kafka keeps a topic days, not a month."""
        return int(
            await self.session.scalar(
                text("""
            WITH oldest AS (
                SELECT min(CAST(substring(pg_get_expr(c.relpartbound, c.oid) FROM $$FROM \\('([^']+)'\\)$$)
                                AS timestamptz)) AS kept_from
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'training_samples'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
            ), gone AS (
                DELETE FROM sample_batches b
                WHERE b.event_id IN (
                    SELECT o.event_id FROM sample_batches o, oldest
                    WHERE o.received_at < least(oldest.kept_from, now() - make_interval(secs => :keep))
                    ORDER BY o.received_at LIMIT :limit)
                  AND NOT EXISTS (SELECT 1 FROM training_samples_default d WHERE d.batch_event_id = b.event_id)
                RETURNING 1)
            SELECT count(*) FROM gone
        """),
                {"keep": keep_days * 86400, "limit": limit},
            )
            or 0
        )
