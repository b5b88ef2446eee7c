"""Repositories and queue statements against the real, migrated PostgreSQL schema."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from fcl.contract.enums import ChampionReason, CheckKind, Direction, JobStatus
from fcl.contract.events import ValidationCheck
from fcl.storage.datasets import DatasetRepository, SampleRepository, load_samples
from fcl.storage.db import Database
from fcl.storage.entities import NewModelVersion, NewSampleBatch
from fcl.storage.errors import ChampionMoved, DatabaseRefused, IntegrityViolation
from fcl.storage.jobs import JobRepository
from fcl.storage.outbox import OutboxRepository
from fcl.storage.queue import CLAIM_CANDIDATE_SQL
from fcl.storage.registry import ChampionRepository, ModelVersionRepository, ValidationRepository
from tests import factories, oracle


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _ingest(db: Database, event_id: str, dataset_id: str, samples: list[dict[str, object]], threshold: int = 10):
    async with db.transaction() as s:
        return await SampleRepository(s).ingest(
            [NewSampleBatch(event_id=event_id, dataset_id=dataset_id, model_type="spending", samples=samples)],
            thresholds={"spending": threshold},
        )


async def test_samples_are_stored_once_and_counted(db: Database) -> None:
    dataset_id = _name("spend")
    samples = [{"user_id": "u1", "date": f"2026-01-{d:02d}", "amount": 10.0 * d} for d in range(1, 8)]
    first = await _ingest(db, _name("ev"), dataset_id, samples)
    assert (first.stored_batches, first.stored_samples, first.crossings) == (1, 7, [])

    event_id = _name("ev")
    second = await _ingest(db, event_id, dataset_id, samples[:4])
    again = await _ingest(db, event_id, dataset_id, samples[:4])
    assert [c.crossing for c in second.crossings] == [1] and second.crossings[0].samples_since_training == 11
    assert again.duplicates == [event_id] and again.stored_samples == 0

    async with db.transaction() as s:
        mark = await SampleRepository(s).watermark(dataset_id)
    assert await load_samples(db.url, dataset_id, up_to=mark) == samples + samples[:4]
    async with db.transaction() as s:
        dataset = await DatasetRepository(s).get(dataset_id)
        assert dataset is not None and dataset.ready and dataset.total_samples == 11
        assert [d.dataset_id for d in await oracle.dataset_ready(s)].count(dataset_id) == 1
        first_seven: int = (
            (
                await s.execute(
                    text("SELECT id FROM training_samples WHERE dataset_id = :d ORDER BY id"), {"d": dataset_id}
                )
            )
            .scalars()
            .all()[6]
        )
        after = await DatasetRepository(s).consume_up_to(dataset_id, first_seven)  # a training used the first 7
        assert await DatasetRepository(s).consume_up_to(dataset_id, first_seven) == after  # once only
    assert after.samples_since_training == 4 and after.total_samples == 11 and after.last_trained_at is not None


async def test_one_waiting_job_per_dataset_and_model_type(db: Database) -> None:
    dataset_id = _name("reco")
    job = await factories.admit(db, dataset_id, "recommendation", priority=3, event_id=_name("t"))
    joined = await factories.admit(db, dataset_id, "recommendation", priority=2, event_id=_name("t"))
    assert joined.job_id == job.job_id and joined.priority == 3
    with pytest.raises(IntegrityViolation, match="uq_training_jobs_waiting"):
        async with db.transaction() as s:
            await s.execute(
                text(
                    "INSERT INTO training_jobs (id, dataset_id, model_type, rank_at, dedupe_key) "
                    "VALUES (gen_random_uuid(), :d, 'recommendation', now(), :k)"
                ),
                {"d": dataset_id, "k": f"{dataset_id}/recommendation"},
            )
    async with db.transaction() as s:
        got = await JobRepository(s).get(job.job_id)
    assert got is not None and got.status is JobStatus.QUEUED
    assert len(got.trigger_event_ids) == 2 and got.priority == 3 and got.attempts == 0
    with pytest.raises(DatabaseRefused, match="ck_training_jobs_priority_range"):
        await factories.admit(db, _name("bad"), "goal", priority=10)


async def test_claim_takes_highest_priority_then_oldest(own_db: Database) -> None:
    made = [await factories.admit(own_db, _name("d"), "goal", priority) for priority in (2, 7, 7, 0, 9)]
    order = []
    for _ in made:
        job = await factories.claim(own_db, "w1")
        assert job is not None and job.status is JobStatus.IN_PROGRESS and job.attempts == 1
        assert job.lease_owner == "w1" and job.lease_token is not None and job.lease_expires_at is not None
        order.append(job.id)
    assert order == [made[4].job_id, made[1].job_id, made[2].job_id, made[0].job_id, made[3].job_id]
    assert await factories.claim(own_db, "w1") is None


async def test_ageing_lets_an_old_low_priority_job_go_first(own_db: Database) -> None:
    old_low = await factories.admit(own_db, _name("d"), "goal", priority=1)
    async with own_db.transaction() as s:
        # Pretend it has waited an hour: six steps, more than the five levels between 1 and 6.
        await s.execute(
            text("UPDATE training_jobs SET rank_at = rank_at - interval '61 minutes' WHERE id = :id"),
            {"id": old_low.job_id},
        )
    await factories.admit(own_db, _name("d"), "goal", priority=6)
    first = await factories.claim(own_db, "w")
    assert first is not None and first.id == old_low.job_id


async def test_claim_is_an_index_scan_with_many_waiting_jobs(own_db: Database) -> None:
    async with own_db.transaction() as s:
        await s.execute(
            text("""
            INSERT INTO training_jobs (id, dataset_id, model_type, status, priority, rank_at, dedupe_key)
            SELECT gen_random_uuid(), 'd' || g, 'goal',
                   CASE WHEN g % 4 = 0 THEN 'queued' ELSE 'completed' END,
                   g % 10, now() - (g % 10) * interval '10 minutes' + g * interval '1 millisecond', 'd' || g || '/goal'
            FROM generate_series(1, 20000) AS g
        """)
        )
        await s.execute(text("ANALYZE training_jobs"))
    async with own_db.transaction() as s:
        plan = "\n".join((await s.execute(text("EXPLAIN " + CLAIM_CANDIDATE_SQL), {"excluded": []})).scalars())
    assert "Index Scan using ix_training_jobs_claim" in plan, plan
    assert "Sort" not in plan, plan


async def test_two_workers_never_claim_the_same_job(own_db: Database) -> None:
    for _ in range(30):
        await factories.admit(own_db, _name("d"), "segmentation")

    async def worker(name: str) -> list[uuid.UUID]:
        got = []
        while (job := await factories.claim(own_db, name)) is not None:
            got.append(job.id)
        return got

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    claimed = [j for r in results for j in r]
    assert len(claimed) == 30 and len(set(claimed)) == 30


async def test_versions_number_up_and_the_champion_moves_by_compare_and_swap(db: Database) -> None:
    model_type = _name("goal")
    versions = []
    for parent in (None, 1, 2):
        done = await factories.failed_attempt(db, _name("ds"), "goal")  # any training event will do
        assert done.training_event_id is not None
        async with db.transaction() as s:
            versions.append(
                await ModelVersionRepository(s).add(
                    NewModelVersion(
                        model_type=model_type,
                        training_event_id=done.training_event_id,
                        job_id=done.job.id,
                        dataset_id="ds",
                        parent_version=parent,
                        artifact_path="/a",
                        artifact_sha256="ab" * 32,
                        artifact_size=1234,
                        artifact_format="skops",
                        metrics={"roc_auc": 0.81},
                        hyperparameters={"n_estimators": 200},
                        dataset_watermark=42,
                        dataset_hash="cd" * 32,
                        seed=7,
                        library_versions={"scikit-learn": "1.9"},
                        code_version="test",
                    )
                )
            )
    assert [v.version for v in versions] == [1, 2, 3]

    async with db.transaction() as s:
        champions = ChampionRepository(s)
        assert await champions.current(model_type) is None
        first = await champions.move(model_type=model_type, version=1, expected=None, reason=ChampionReason.VALIDATED)
    # Two candidates validated against v1 at the same time: only one of them may move it.
    async with db.transaction() as s:
        second = await ChampionRepository(s).move(
            model_type=model_type, version=2, expected=first, reason=ChampionReason.VALIDATED
        )
    with pytest.raises(ChampionMoved):
        async with db.transaction() as s:
            await ChampionRepository(s).move(
                model_type=model_type, version=3, expected=first, reason=ChampionReason.VALIDATED
            )
    async with db.transaction() as s:
        current = await ChampionRepository(s).current(model_type)
        listed = await ModelVersionRepository(s).list(model_type)
        events: Sequence[dict[str, Any]] = (
            (
                await s.execute(
                    text("SELECT payload FROM outbox WHERE topic = 'model-versions' AND key = :mt ORDER BY id"),
                    {"mt": model_type},
                )
            )
            .scalars()
            .all()
        )
    assert current is not None and current.version == 2 and current.previous_version == 1 and current == second
    assert [v.version for v in listed] == [3, 2, 1] and listed[0].parent_version == 2
    # every move, and only a move that happened, queued its model-versions event
    assert [(e["version"], e["previous_version"], e["reason"]) for e in events] == [
        (1, None, "validated"),
        (2, 1, "validated"),
    ]
    assert [e["event_id"] for e in events] == [str(first.event_id), str(second.event_id)]

    with pytest.raises(DatabaseRefused, match="append-only"):
        async with db.transaction() as s:
            await s.execute(text("UPDATE champion_ledger SET version = 3 WHERE model_type = :mt"), {"mt": model_type})
    with pytest.raises(DatabaseRefused, match="append-only"):
        async with db.transaction() as s:
            await s.execute(text("DELETE FROM champion_ledger WHERE model_type = :mt"), {"mt": model_type})
    with pytest.raises(IntegrityViolation):  # a champion must be a recorded version
        async with db.transaction() as s:
            await ChampionRepository(s).move(
                model_type=model_type, version=99, expected=current, reason=ChampionReason.MANUAL
            )


async def test_validation_checks_keep_their_order_and_verdicts(db: Database) -> None:
    event_id = (await factories.failed_attempt(db, _name("ds"), "goal")).training_event_id
    assert event_id is not None
    checks = [
        ValidationCheck(
            metric="roc_auc", value=0.8, baseline=None, threshold=0.6, direction=Direction.HIGHER_IS_BETTER, passed=True
        ),
        ValidationCheck(
            metric="brier",
            value=0.25,
            baseline=0.2,
            threshold=0.05,
            direction=Direction.LOWER_IS_BETTER,
            passed=False,
            kind=CheckKind.CHANGE,
        ),
        ValidationCheck(
            metric="pr_auc",
            value=None,
            baseline=0.5,
            threshold=0.0,
            direction=Direction.HIGHER_IS_BETTER,
            passed=False,
            kind=CheckKind.CHANGE,
        ),
    ]
    async with db.transaction() as s:
        await ValidationRepository(s).add(
            training_event_id=event_id, model_type="goal", candidate_version=None, baseline_version=None, checks=checks
        )
    async with db.transaction() as s:
        assert await ValidationRepository(s).for_training_event(event_id) == checks


async def test_outbox_hands_out_pending_messages_in_order_once_marked(own_db: Database) -> None:
    payloads = [{"n": i, "text": "naïve ✓"} for i in range(5)]
    async with own_db.transaction() as s:
        assert (
            await OutboxRepository(s).add_many([("training-status", f"k{i}", p) for i, p in enumerate(payloads)]) == 5
        )
        assert await OutboxRepository(s).add_many([]) == 0
    async with own_db.transaction() as s:
        pending = await OutboxRepository(s).pending_encoded(limit=3)
        decoded = [json.loads(m.payload_json) for m in pending]
        assert [d["n"] for d in decoded] == [0, 1, 2] and decoded[0]["text"] == "naïve ✓"
        assert [m.key for m in pending] == ["k0", "k1", "k2"]
        # the event_id each payload got is the outbox key
        assert [d["event_id"] for d in decoded] == [p["event_id"] for p in payloads[:3]]
        assert all(uuid.UUID(d["event_id"]) for d in decoded)
        assert await OutboxRepository(s).mark_published([m.id for m in pending]) == 3
    async with own_db.transaction() as s:
        rest = await OutboxRepository(s).pending_encoded()
        assert [json.loads(m.payload_json)["n"] for m in rest] == [3, 4]
        assert await OutboxRepository(s).unpublished() == 2
        assert await OutboxRepository(s).mark_published([pending[0].id]) == 0  # already published


async def test_an_outbox_insert_notifies_the_relays_at_commit(own_db: Database) -> None:
    """Migration 0006: whoever writes the outbox, the relays hear of it when it commits (and
    not before, nor for a rolled-back write)."""
    from fcl.storage.notifications import OUTBOX_CHANNEL, Notifications

    heard: list[str] = []
    notifications = Notifications(own_db.url)
    notifications.subscribe(OUTBOX_CHANNEL, heard.append)
    notifications.start()
    try:
        for _ in range(100):
            if notifications.healthy:
                break
            await asyncio.sleep(0.05)
        assert notifications.healthy
        with pytest.raises(RuntimeError):
            async with own_db.transaction() as s:
                await OutboxRepository(s).add_many([("training-status", "k", {"n": 1})])
                raise RuntimeError("rolled back")
        async with own_db.transaction() as s:
            await OutboxRepository(s).add_many([("training-status", "k", {"n": 2})])
            await asyncio.sleep(0.3)
            assert heard == []  # not before the commit
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.05)
        assert heard == [""]
    finally:
        await notifications.stop()


async def test_the_job_lifecycle_is_plain_sql_in_one_module(db: Database) -> None:
    """No PL/pgSQL admission function is left behind (migration 0006)."""
    async with db.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM pg_proc WHERE proname = 'fcl_admit_trigger'")) == 0


async def _ingest_goals(db: Database, dataset_id: str, *events: dict[str, float]) -> Any:
    """One goal samples event per feature set (one sample each, its shape the feature names), in
    one ingest."""
    async with db.transaction() as s:
        return await SampleRepository(s).ingest(
            [
                NewSampleBatch(
                    event_id=_name("ev"),
                    dataset_id=dataset_id,
                    model_type="goal",
                    samples=[{"user_id": "u", "goal_id": "g", "features": f, "achieved": True}],
                    shape={"features": sorted(f)},
                )
                for f in events
            ],
            thresholds={"goal": 100},
        )


async def test_a_dataset_keeps_the_shape_of_its_first_samples_and_refuses_another(db: Database) -> None:
    dataset_id = _name("shaped")
    first = await _ingest_goals(db, dataset_id, {"a": 1.0, "b": 2.0})
    same = await _ingest_goals(db, dataset_id, {"b": 3.0, "a": 4.0})
    other = await _ingest_goals(db, dataset_id, {"a": 1.0, "c": 2.0})
    assert (first.stored_samples, same.stored_samples, other.stored_samples) == (1, 1, 0)
    [(_event_id, reason)] = other.refused.items()
    assert "shape" in reason and '"c"' in reason


async def test_a_dataset_whose_events_add_features_starts_a_new_shape_version_and_trains_on_it(db: Database) -> None:
    """A producer adds a feature: its events are not refused, they start shape version 2, and a
    training reads the samples of the newest shape only. A shape that drops a feature is still
    refused, until an operator resets the shape: the next event's shape is then version 3."""
    dataset_id = _name("evolving")

    async def ingest(*events: dict[str, float]):
        return await _ingest_goals(db, dataset_id, *events)

    async def dataset():
        async with db.transaction() as s:
            found = await DatasetRepository(s).get(dataset_id)
            assert found is not None
            return found, await SampleRepository(s).watermark(dataset_id)

    await ingest({"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 2.0})
    v1, _ = await dataset()
    assert (v1.shape_version, v1.shape_from_id, v1.sample_shape) == (1, 0, {"features": ["a", "b"]})
    # in one batch: an old-shape event, the event that adds "c", and a new-shape one after it
    grown = await ingest({"a": 3.0, "b": 3.0}, {"a": 4.0, "b": 4.0, "c": 4.0}, {"a": 5.0, "b": 5.0, "c": 5.0})
    assert grown.stored_samples == 3 and grown.refused == {}
    v2, mark = await dataset()
    assert (v2.shape_version, v2.sample_shape) == (2, {"features": ["a", "b", "c"]})
    newest = await load_samples(db.url, dataset_id, up_to=mark, after=v2.shape_from_id)
    assert [s["features"]["a"] for s in newest] == [4.0, 5.0]  # the newest shape's samples only
    assert len(await load_samples(db.url, dataset_id, up_to=mark)) == 5  # every sample is kept
    dropped = await ingest({"a": 6.0, "b": 6.0})  # the old shape again: a feature dropped
    [(_event, reason)] = dropped.refused.items()
    assert "reset-shape" in reason
    async with db.transaction() as s:
        await DatasetRepository(s).reset_shape(dataset_id)
    reset, _ = await dataset()
    assert reset.sample_shape is None and reset.shape_version == 2
    assert (await ingest({"x": 1.0})).stored_samples == 1
    v3, mark = await dataset()
    assert (v3.shape_version, v3.sample_shape) == (3, {"features": ["x"]}) and v3.shape_from_id > v2.shape_from_id
    assert [s["features"] for s in await load_samples(db.url, dataset_id, up_to=mark, after=v3.shape_from_id)] == [
        {"x": 1.0}
    ]


async def test_a_schema_the_code_does_not_match_stops_the_batch_instead_of_dead_lettering_it(
    own_db: Database,
) -> None:
    """Once, on an unmigrated database the streams worker dead-lettered valid events ("function
    does not exist"). A missing table is no event's fault: the batch raises (the agent dies and
    the process exits 1), and nothing is dead-lettered."""
    from fcl.contract.settings import Settings
    from fcl.storage.errors import SchemaMismatch
    from fcl.storage.stores import IngestStore
    from fcl.streams.ingest import ThresholdIngestor, commit_batch
    from fcl.streams.parsing import RawMessage

    async with own_db.transaction() as s:
        await s.execute(text("DROP TABLE job_triggers"))
    event = {"event_id": "e1", "dataset_id": "d", "model_type": "goal"}
    message = RawMessage(topic="t", partition=0, offset=0, key=b"d", value=json.dumps(event).encode())
    ingestor = ThresholdIngestor(IngestStore(own_db), Settings(database_url=own_db.url, _env_file=None))
    with pytest.raises(SchemaMismatch, match="fcl migrate"):
        await commit_batch(ingestor, [message])
    async with own_db.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM outbox")) == 0


async def test_one_event_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_commits(
    own_db: Database,
) -> None:
    """The batch is split in halves down to the event at fault; redelivering the whole batch (a
    crash before the acknowledgement) changes nothing and does not get stuck on the dead letter
    already queued."""
    from fcl.contract.settings import Settings
    from fcl.storage.stores import IngestStore
    from fcl.streams.ingest import ThresholdIngestor, commit_batch
    from fcl.streams.parsing import RawMessage

    async with own_db.transaction() as s:  # a refusal that depends on one event's data
        await s.execute(text("ALTER TABLE job_triggers ADD CONSTRAINT no_e5 CHECK (event_id <> 'e5')"))
    messages = [
        RawMessage(
            topic="t",
            partition=0,
            offset=i,
            key=b"d",
            value=json.dumps({"event_id": f"e{i}", "dataset_id": f"d{i}", "model_type": "goal"}).encode(),
        )
        for i in range(9)
    ]
    ingestor = ThresholdIngestor(IngestStore(own_db), Settings(database_url=own_db.url, _env_file=None))
    report = await commit_batch(ingestor, messages)
    assert report is not None and report.jobs_created == 8 and len(report.dead_letters) == 1
    assert report.dead_letters[0].startswith("refused by the database") and "no_e5" in report.dead_letters[0]
    again = await commit_batch(ingestor, messages)
    assert again is not None and again.jobs_created == 0 and again.duplicates == 8
    async with own_db.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM training_jobs")) == 8
        letters = (await s.execute(text("SELECT payload FROM outbox WHERE topic = 'dead-letter'"))).all()
    assert len(letters) == 1 and letters[0][0]["offset"] == 5


async def test_a_training_reads_its_samples_in_chunks_and_only_its_window(db: Database) -> None:
    dataset_id = _name("window")
    samples = [{"user_id": f"u{i}", "date": "2026-01-01", "amount": float(i)} for i in range(30)]
    for start in range(0, 30, 10):
        await _ingest(db, _name("ev"), dataset_id, samples[start : start + 10], threshold=10**6)
    async with db.transaction() as s:
        mark = await SampleRepository(s).watermark(dataset_id)
    await _ingest(db, _name("ev"), dataset_id, [{"user_id": "later", "date": "2026-01-02", "amount": 1.0}])
    assert await load_samples(db.url, dataset_id, up_to=mark, chunk_rows=4) == samples  # the watermark holds
    assert await load_samples(db.url, dataset_id, up_to=mark, window=7, chunk_rows=3) == samples[-7:]
    assert await load_samples(db.url, dataset_id, up_to=mark, window=1000) == samples
    assert await load_samples(db.url, "no-such-dataset", up_to=mark, window=5) == []


async def test_the_claim_asks_whether_a_dataset_still_trains_of_its_running_jobs_only(own_db: Database) -> None:
    """One dataset with thousands of finished jobs (a stable dataset id trained for months): the
    probe for a running job of the candidate's dataset reads the running-jobs index, not them."""
    async with own_db.transaction() as s:
        await s.execute(
            text("""
            INSERT INTO training_jobs (id, dataset_id, model_type, status, priority, rank_at, dedupe_key)
            SELECT gen_random_uuid(), 'fincoach-goal', 'goal',
                   CASE WHEN g = 1 THEN 'queued' ELSE 'completed' END, 5, now(), 'fincoach-goal/goal'
            FROM generate_series(1, 20000) AS g
        """)
        )
        await s.execute(text("ANALYZE training_jobs"))
    async with own_db.transaction() as s:
        plan = "\n".join((await s.execute(text("EXPLAIN " + CLAIM_CANDIDATE_SQL), {"excluded": []})).scalars())
    assert "ix_training_jobs_running_pair" in plan, plan


async def test_the_relay_holds_no_transaction_while_the_broker_answers(own_db: Database) -> None:
    """A slow broker (an offline partition makes every send wait out the producer's timeout) must
    not hold a database transaction open: while the records are out, the relay's connection is
    idle, not idle in transaction, and a second relay finds the turn taken and sends nothing."""
    import asyncio

    from fcl.storage.outbox import OutboxRelay

    async with own_db.transaction() as s:
        await OutboxRepository(s).add_many([("training-status", f"k{i}", {"n": i}) for i in range(3)])
    seen: list[tuple[str, ...]] = []
    sent: list[bytes | None] = []

    async def slow_send(topic: str, key: bytes | None, value: bytes, headers: object) -> asyncio.Future[None]:
        async with own_db.transaction() as s:
            states: list[str] = list(
                (
                    await s.execute(
                        text(
                            "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND state IS NOT NULL"
                        )
                    )
                ).scalars()
            )
            seen.append(tuple(states))
        # meanwhile another relay has nothing to do: the turn is taken
        assert await OutboxRelay(own_db, slow_send, topic_prefix="x.").publish_once() == 0
        sent.append(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    relay = OutboxRelay(own_db, slow_send, topic_prefix="x.")
    assert await relay.publish_once() == 3
    assert sent == [b"k0", b"k1", b"k2"] and len(seen) == 3
    assert all("idle in transaction" not in states for states in seen), seen
    async with own_db.transaction() as s:
        assert await OutboxRepository(s).unpublished() == 0
    assert await relay.publish_once() == 0  # the turn was given back: the next batch is this relay's


async def test_a_server_that_is_read_only_during_a_failover_is_waited_out_not_blamed_on_the_data(db: Database) -> None:
    """A standby being promoted answers writes with 25006 for a while. On the real server: the
    error is retriable (the streams wait and retry; the event is not dead-lettered), and a lock
    held too long (55P03) is too."""
    from fcl.storage.errors import DatabaseUnavailable

    read_only = Database(db.url, pool_size=1, server_settings={"default_transaction_read_only": "on"})
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await _ingest_goals(read_only, _name("ro"), {"a": 1.0})
        assert caught.value.retriable and caught.value.sqlstate == "25006"
    finally:
        await read_only.close()
    dataset_id = _name("locked")
    await _ingest_goals(db, dataset_id, {"a": 1.0})
    async with db.transaction() as holder:
        await holder.execute(text("SELECT 1 FROM datasets WHERE dataset_id = :d FOR UPDATE"), {"d": dataset_id})
        impatient = Database(db.url, pool_size=1, server_settings={"lock_timeout": "200ms"})
        try:
            with pytest.raises(DatabaseUnavailable) as waited:
                await _ingest_goals(impatient, dataset_id, {"a": 2.0})
            assert waited.value.retriable and waited.value.sqlstate == "55P03"
        finally:
            await impatient.close()
