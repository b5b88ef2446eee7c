"""The retention of model versions on the real database and the stack's object store: the
champion, the newest N and what the ledger's last M days named are kept; the others are marked
deleted and their artifacts removed from the store; running it again changes nothing; a removed
version cannot serve again."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from fcl.storage.artifacts import ArtifactStore, ArtifactUnavailable, StoredArtifact
from fcl.storage.db import Database
from fcl.storage.errors import VersionDeleted
from fcl.storage.registry import ChampionRepository
from fcl.storage.stores import WorkerStore
from fcl.trainers.base import Artifact
from fcl.worker import retention
from fcl.worker.retention import RetentionPolicy
from tests import factories, oracle
from tests.conftest import RunStack
from tests.integration.streams_support import rows


@pytest.fixture
def store(stack: RunStack) -> ArtifactStore:
    return stack.artifact_store(f"test-{uuid.uuid4().hex[:10]}")


async def test_retention_keeps_champion_newest_and_recent_ledger_and_is_idempotent(
    own_db: Database, store: ArtifactStore
) -> None:
    stored: dict[int, StoredArtifact] = {}
    for number in range(1, 7):
        data = f"model {number}".encode()
        artifact = store.write(store.key_for_job("goal", uuid.uuid4(), 1, "skops"), Artifact(data, "skops"))
        version = await factories.record_version(
            own_db, "goal", passed=True, artifact_path=artifact.path, sha256=artifact.sha256, size=artifact.size
        )
        assert version.model_version == number and hashlib.sha256(data).hexdigest() == artifact.sha256
        stored[number] = artifact
    async with own_db.transaction() as s:
        await ChampionRepository(s).promote("goal", 1, note="the old one serves", actor="operator test")

    # Every version was named by a champion move of the last 30 days: nothing goes.
    kept = await retention.sweep(WorkerStore(own_db), store, RetentionPolicy(keep_versions=2, keep_days=30))
    assert kept.marked == {} and kept.artifacts_removed == 0

    # With no ledger window: the champion (v1) and the newest two (v5, v6) stay.
    store.delete(stored[3].path)  # as if a sweep had died after deleting it, before recording it
    first = await retention.sweep(WorkerStore(own_db), store, RetentionPolicy(keep_versions=2, keep_days=0))
    assert first.marked == {"goal": [2, 3, 4]} and first.artifacts_removed == 3 and not first.failed
    for number, artifact in stored.items():
        if number in (2, 3, 4):
            with pytest.raises(ArtifactUnavailable):
                store.read(artifact)
        else:
            assert store.read(artifact).data == f"model {number}".encode()
    states = await rows(
        own_db,
        "SELECT version, deleted_at IS NOT NULL AS deleted, artifact_deleted_at IS NOT NULL AS gone "
        "FROM model_versions WHERE model_type = 'goal' ORDER BY version",
    )
    assert [(r.version, r.deleted, r.gone) for r in states] == [
        (1, False, False),
        (2, True, True),
        (3, True, True),
        (4, True, True),
        (5, False, False),
        (6, False, False),
    ]

    again = await retention.sweep(WorkerStore(own_db), store, RetentionPolicy(keep_versions=2, keep_days=0))
    assert again.marked == {} and again.artifacts_removed == 0  # idempotent

    async with own_db.transaction() as s:
        with pytest.raises(VersionDeleted):
            await ChampionRepository(s).promote("goal", 3, note="bring it back", actor="operator test")
    async with own_db.transaction() as s:
        ledger = await oracle.champion_ledger(s, "goal")
    assert ledger[0].version == 1 and ledger[0].actor == "operator test" and ledger[0].note == "the old one serves"
    assert all(m.actor and m.actor.startswith("job ") for m in ledger[1:])  # the validated moves name their job


async def _day_of(db: Database, days_ago: int) -> str:
    """The name of the daily partition of `days_ago` days before today."""
    [row] = await rows(db, "SELECT to_char(current_date - CAST(:d AS integer), 'YYYYMMDD') AS day", d=days_ago)
    return f"training_samples_p{row.day}"


async def test_old_days_of_samples_are_dropped_whole_unless_a_window_still_reads_them(own_db: Database) -> None:
    """Samples go by whole days (partitions), never by a DELETE: a day older than the retention is
    dropped when no dataset's training window reads any of its rows. A busy dataset's old day
    goes; a quiet dataset whose window still covers its old samples keeps its day; the counters
    stay as they were; the days ahead have their partitions."""
    from fcl.storage.datasets import SampleRetention

    await rows(own_db, "SELECT fcl_ensure_sample_partitions(current_date - 41, 3) AS made")
    await rows(
        own_db,
        "INSERT INTO datasets (dataset_id, model_type, threshold) VALUES ('quiet', 'goal', 100) RETURNING dataset_id",
    )
    for dataset_id, days_ago, n in (("busy", 40, 10), ("quiet", 39, 3)):
        await rows(
            own_db,
            "INSERT INTO training_samples (dataset_id, batch_event_id, payload, created_at) "
            "SELECT :d, 'old', '{}'::jsonb, now() - make_interval(days => :ago) FROM generate_series(1, :n) "
            "RETURNING id",
            d=dataset_id,
            ago=days_ago,
            n=n,
        )
    await factories.store(own_db, "busy", "goal", count=20)  # today: newer than the old day
    before = {
        r.dataset_id: r.total_samples for r in await rows(own_db, "SELECT dataset_id, total_samples FROM datasets")
    }

    windows = {"recommendation": 15, "segmentation": 15, "spending": 15, "goal": 15}
    async with own_db.transaction() as s:
        assert await SampleRetention(s).ensure_partitions() >= 0
        dropped = await SampleRetention(s).drop_old_days(keep_days=30, windows=windows)
    # busy's window (its 15 newest) is all of today: its old day goes, and the empty day before it
    assert dropped == [await _day_of(own_db, 41), await _day_of(own_db, 40)]
    counts = {
        r.dataset_id: r.n
        for r in await rows(own_db, "SELECT dataset_id, count(*) AS n FROM training_samples GROUP BY dataset_id")
    }
    assert counts == {"busy": 20, "quiet": 3}  # quiet's window still reads its day: kept
    after = {
        r.dataset_id: r.total_samples for r in await rows(own_db, "SELECT dataset_id, total_samples FROM datasets")
    }
    assert after == before
    ahead = await rows(
        own_db,
        "SELECT count(*) AS n FROM pg_class WHERE relname = ANY(ARRAY(SELECT 'training_samples_p' || "
        "to_char(current_date + i, 'YYYYMMDD') FROM generate_series(0, 8) AS i))",
    )
    assert ahead[0].n == 9
    async with own_db.transaction() as s:  # again: nothing more to drop (idempotent)
        assert await SampleRetention(s).drop_old_days(keep_days=30, windows=windows) == []
    await factories.store(own_db, "quiet", "goal", count=15)  # quiet gets busier: its window moves on
    async with own_db.transaction() as s:
        assert await SampleRetention(s).drop_old_days(keep_days=30, windows=windows) == [await _day_of(own_db, 39)]


async def test_narrow_partitions_are_found_by_their_bounds_and_never_overlap_a_day(own_db: Database) -> None:
    """With FCL_SAMPLE_PARTITION_SECONDS shorter than a day (an accelerated run), partitions are
    made on multiples of the width and the retention finds the old ones by their upper bound, not
    their names; a partition that would overlap a day's already there is not made (its rows go to
    the day's), and an insert never fails."""
    from fcl.storage.datasets import SampleRetention

    [made] = await rows(own_db, "SELECT fcl_ensure_sample_partitions_every(now() - interval '100 days', 60, 3) AS n")
    assert made.n == 3
    [again] = await rows(own_db, "SELECT fcl_ensure_sample_partitions_every(now() - interval '100 days', 60, 3) AS n")
    assert again.n == 0  # idempotent
    [overlap] = await rows(own_db, "SELECT fcl_ensure_sample_partitions_every(now(), 60, 2) AS n")
    assert overlap.n == 0  # today's day partition (migration 0018) covers them
    narrow = await rows(
        own_db,
        "SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'training_samples'::regclass "
        "AND c.relname ~ '_[0-9]{6}$' ORDER BY c.relname",
    )
    assert len(narrow) == 3 and all(r.name.endswith("00") for r in narrow)  # on whole minutes
    assert all("FOR VALUES FROM" in r.bound for r in narrow)
    await rows(
        own_db,
        "INSERT INTO training_samples (dataset_id, batch_event_id, payload, created_at) "
        "SELECT 'busy', 'old', '{}'::jsonb, lower_bound + interval '30 seconds' FROM (SELECT "
        "CAST(substring(pg_get_expr(c.relpartbound, c.oid) FROM $$FROM \\('([^']+)'\\)$$) AS timestamptz) "
        "AS lower_bound FROM pg_class c WHERE c.relname = :name) b, generate_series(1, 4) RETURNING id",
        name=narrow[1].name,
    )
    [placed] = await rows(
        own_db,
        "SELECT count(*) AS n FROM training_samples WHERE tableoid = CAST(:name AS regclass)",
        name=narrow[1].name,
    )
    assert placed.n == 4  # the row went to its minute's partition, not the default one
    await factories.store(own_db, "busy", "goal", count=10)  # today: the window reads only these
    windows = dict.fromkeys(("recommendation", "segmentation", "spending", "goal"), 5)
    async with own_db.transaction() as s:
        dropped = await SampleRetention(s).drop_old_days(keep_days=30, windows=windows)
    assert dropped[:3] == [r.name for r in narrow]  # oldest first, by bound
    [left] = await rows(own_db, "SELECT count(*) AS n FROM training_samples WHERE dataset_id = 'busy'")
    assert left.n == 10


async def test_a_champion_that_stays_keeps_a_copy_of_its_reference_set_not_its_days(own_db: Database) -> None:
    """A champion's reference set is the samples up to its watermark, within its window. While the
    champion stays, the days after its watermark go like any other (found by the months soak: an
    open-ended range kept every day after a stale champion's training), and so do the days it was
    judged on: its rows are copied to reference_samples first, in the same transaction, and a
    judgement reads the same rows from the copy. Found by the months soak too: keeping those days
    kept every dataset's rows of them, a sawtooth of +40 % of the database while a spending
    champion stayed. The copy goes whole once the version is no longer champion."""
    from fcl.storage.datasets import SampleRetention, load_samples

    await rows(own_db, "SELECT fcl_ensure_sample_partitions(current_date - 45, 3) AS made")
    await rows(
        own_db,
        "INSERT INTO datasets (dataset_id, model_type, threshold) VALUES ('judged', 'goal', 100) RETURNING dataset_id",
    )
    ids: dict[int, list[int]] = {}
    for days_ago in (45, 44, 43):
        made = await rows(
            own_db,
            "INSERT INTO training_samples (dataset_id, batch_event_id, payload, created_at) "
            "SELECT 'judged', 'old', jsonb_build_object('day', CAST(:ago AS int), 'n', g), "
            "now() - make_interval(days => :ago) "
            "FROM generate_series(1, 3) AS g RETURNING id",
            ago=days_ago,
        )
        ids[days_ago] = [r.id for r in made]
    # another dataset's rows in the champion's day: they are not part of its reference set
    await rows(
        own_db,
        "INSERT INTO training_samples (dataset_id, batch_event_id, payload, created_at) "
        "SELECT 'other', 'old', '{}'::jsonb, now() - interval '45 days' FROM generate_series(1, 4) RETURNING id",
    )
    await factories.store(own_db, "judged", "goal", count=20)  # today: the dataset's own window
    done = await factories.record_version(own_db, "goal", dataset_id="judged")  # the champion
    watermark = max(ids[44])
    await rows(
        own_db,
        "UPDATE model_versions SET dataset_watermark = :w, info = info || '{\"train_window\": 4}'::jsonb "
        "WHERE model_type = 'goal' AND version = :v RETURNING version",
        w=watermark,
        v=done.model_version,
    )
    champion = f"goal:{done.model_version}"
    judged_on = await load_samples(own_db.url, "judged", up_to=watermark, window=4, champion=champion)
    assert [(s["day"], s["n"]) for s in judged_on] == [(45, 3), (44, 1), (44, 2), (44, 3)]

    windows = dict.fromkeys(("recommendation", "segmentation", "spending", "goal"), 5)
    async with own_db.transaction() as s:
        dropped = await SampleRetention(s).drop_old_days(keep_days=30, windows=windows)
    assert dropped == [await _day_of(own_db, d) for d in (45, 44, 43)]  # every old day goes
    [left] = await rows(own_db, "SELECT count(*) AS n FROM training_samples WHERE batch_event_id = 'old'")
    assert left.n == 0
    copied = await rows(own_db, "SELECT champion, id FROM reference_samples ORDER BY id")
    assert {r.champion for r in copied} == {champion}
    assert [r.id for r in copied] == [ids[45][2], *ids[44]]  # its own rows in its range, nothing else
    # a judgement reads the same rows as before, from the copy
    assert await load_samples(own_db.url, "judged", up_to=watermark, window=4, champion=champion) == judged_on
    async with own_db.transaction() as s:  # again: nothing more to drop or copy (idempotent)
        assert await SampleRetention(s).drop_old_days(keep_days=30, windows=windows) == []
    assert len(await rows(own_db, "SELECT id FROM reference_samples")) == 4

    await factories.record_version(own_db, "goal")  # a new champion: the old one's copy goes whole
    async with own_db.transaction() as s:
        await SampleRetention(s).drop_old_days(keep_days=30, windows=windows)
    assert await rows(own_db, "SELECT id FROM reference_samples") == []
    [partitions] = await rows(
        own_db, "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'reference_samples'::regclass"
    )
    assert partitions.n == 0


async def test_the_ids_of_samples_events_whose_samples_have_gone_are_forgotten(own_db: Database) -> None:
    """sample_batches does not grow for ever: once a partition is dropped, the ids of the samples
    events whose rows it held are forgotten (and only those: an event whose rows are kept, in a
    partition or in the default one, keeps its id, so a redelivery is still a duplicate)."""
    from fcl.storage.datasets import SampleRetention

    await rows(own_db, "SELECT fcl_ensure_sample_partitions(current_date - 41, 2) AS made")
    await rows(
        own_db,
        "INSERT INTO datasets (dataset_id, model_type, threshold) VALUES ('busy', 'goal', 100) RETURNING dataset_id",
    )
    # two events of 40 days ago (their day has a partition), one of 60 days ago (its rows went to
    # the default partition: no partition covers that day)
    for event_id, days_ago in (("old-1", 40), ("old-2", 40), ("stray", 60)):
        await rows(
            own_db,
            "WITH b AS (INSERT INTO sample_batches (event_id, dataset_id, sample_count, received_at) "
            "VALUES (:e, 'busy', 3, now() - make_interval(days => :ago)) RETURNING received_at) "
            "INSERT INTO training_samples (dataset_id, batch_event_id, payload, created_at) "
            "SELECT 'busy', :e, '{}'::jsonb, b.received_at FROM b, generate_series(1, 3) RETURNING id",
            e=event_id,
            ago=days_ago,
        )
    await factories.store(own_db, "busy", "goal", count=20)  # today's events
    windows = dict.fromkeys(("recommendation", "segmentation", "spending", "goal"), 5)
    async with own_db.transaction() as s:
        assert await SampleRetention(s).forget_batches(keep_days=30) == 0  # their partition is still there
        dropped = await SampleRetention(s).drop_old_days(keep_days=30, windows=windows)
        assert len(dropped) == 2
        assert await SampleRetention(s).forget_batches(keep_days=30) == 2
        assert await SampleRetention(s).forget_batches(keep_days=30) == 0  # again: nothing more
    left = {r.event_id for r in await rows(own_db, "SELECT event_id FROM sample_batches")}
    assert "stray" in left and not left & {"old-1", "old-2"}
    [today] = await rows(
        own_db, "SELECT count(*) AS n FROM sample_batches WHERE received_at > now() - interval '1 day'"
    )
    assert today.n >= 1 and len(left) == today.n + 1
