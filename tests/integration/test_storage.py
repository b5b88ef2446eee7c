"""Repositories against the real, migrated PostgreSQL schema."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from storage.db import Database
from storage.entities import ChampionReason, Direction, JobStatus, NewModelVersion, ValidationCheck
from storage.repositories import (
    ChampionMoveConflict,
    ChampionRepository,
    DatasetRepository,
    JobRepository,
    QueueRepository,
    ModelVersionRepository,
    OutboxRepository,
    SampleRepository,
    ValidationRepository,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_samples_are_stored_once_and_counted(db: Database) -> None:
    dataset_id = _name("spend")
    samples = [{"user_id": "u1", "date": f"2026-01-{d:02d}", "amount": 10.0 * d} for d in range(1, 8)]
    async with db.transaction() as s:
        first = await SampleRepository(s).add_batch(
            event_id=_name("ev"), dataset_id=dataset_id, model_type="spending", default_threshold=10, samples=samples
        )
    assert (first.stored, first.duplicate) == (7, False)
    assert first.dataset.samples_since_training == 7 and not first.dataset.ready

    event_id = _name("ev")
    async with db.transaction() as s:
        second = await SampleRepository(s).add_batch(
            event_id=event_id, dataset_id=dataset_id, model_type="spending", default_threshold=10, samples=samples[:4]
        )
    async with db.transaction() as s:
        again = await SampleRepository(s).add_batch(
            event_id=event_id, dataset_id=dataset_id, model_type="spending", default_threshold=10, samples=samples[:4]
        )
    assert second.dataset.samples_since_training == 11 and second.dataset.ready
    assert again.duplicate and again.stored == 0 and again.dataset.total_samples == 11

    async with db.transaction() as s:
        repo = SampleRepository(s)
        mark = await repo.watermark(dataset_id)
        loaded = await repo.load(dataset_id, up_to=mark)
        assert loaded == samples + samples[:4]
        assert [d.dataset_id for d in await DatasetRepository(s).ready()].count(dataset_id) == 1
        after = await DatasetRepository(s).consume(dataset_id, used=9)
    assert after.samples_since_training == 2 and after.total_samples == 11 and after.last_trained_at is not None


async def test_one_waiting_job_per_dataset_and_model_type(db: Database) -> None:
    dataset_id = _name("reco")
    async with db.transaction() as s:
        job = await JobRepository(s).insert(
            dataset_id=dataset_id, model_type="recommendation", priority=3, trigger_event_ids=["t-1", "t-2"]
        )
    with pytest.raises(IntegrityError, match="uq_training_jobs_waiting"):
        async with db.transaction() as s:
            await JobRepository(s).insert(
                dataset_id=dataset_id, model_type="recommendation", priority=5, trigger_event_ids=[_name("t")]
            )
    with pytest.raises(IntegrityError, match="pk_job_triggers"):
        async with db.transaction() as s:
            await JobRepository(s).insert(
                dataset_id=_name("other"), model_type="goal", priority=5, trigger_event_ids=["t-1"]
            )
    async with db.transaction() as s:
        got = await JobRepository(s).get(job.id)
    assert got is not None and got.status is JobStatus.QUEUED
    assert got.trigger_event_ids == ("t-1", "t-2") and got.priority == 3 and got.attempts == 0
    with pytest.raises(DBAPIError, match="ck_training_jobs_priority_range"):
        async with db.transaction() as s:
            await JobRepository(s).insert(dataset_id=_name("bad"), model_type="goal", priority=10, trigger_event_ids=[])


async def test_claim_takes_highest_priority_then_oldest(own_db: Database) -> None:
    made = []
    for priority in (2, 7, 7, 0, 9):
        async with own_db.transaction() as s:
            made.append(
                await JobRepository(s).insert(
                    dataset_id=_name("d"), model_type="goal", priority=priority, trigger_event_ids=[]
                )
            )
    order = []
    for _ in made:
        async with own_db.transaction() as s:
            job = await QueueRepository(s).claim(worker="w1", lease=timedelta(seconds=30))
        assert job is not None and job.status is JobStatus.IN_PROGRESS and job.attempts == 1
        assert job.lease_owner == "w1" and job.lease_token is not None and job.lease_expires_at is not None
        order.append(job.id)
    assert order == [made[4].id, made[1].id, made[2].id, made[0].id, made[3].id]
    async with own_db.transaction() as s:
        assert await QueueRepository(s).claim(worker="w1", lease=timedelta(seconds=30)) is None


async def test_ageing_lets_an_old_low_priority_job_go_first(own_db: Database) -> None:
    async with own_db.transaction() as s:
        repo = JobRepository(s, ageing_step=timedelta(minutes=10))
        old_low = await repo.insert(dataset_id=_name("d"), model_type="goal", priority=1, trigger_event_ids=[])
        # Pretend it has waited an hour: six steps, more than the five levels between 1 and 6.
        await s.execute(
            text("UPDATE training_jobs SET rank_at = rank_at - interval '61 minutes' WHERE id = :id"),
            {"id": old_low.id},
        )
        await repo.insert(dataset_id=_name("d"), model_type="goal", priority=6, trigger_event_ids=[])
    async with own_db.transaction() as s:
        first = await QueueRepository(s).claim(worker="w", lease=timedelta(seconds=5))
    assert first is not None and first.id == old_low.id


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
        from storage.repositories import CLAIM_CANDIDATE_SQL

        plan = "\n".join((await s.execute(text("EXPLAIN " + CLAIM_CANDIDATE_SQL), {"excluded": []})).scalars())
    assert "Index Scan using ix_training_jobs_claim" in plan, plan
    assert "Sort" not in plan, plan


async def test_two_workers_never_claim_the_same_job(own_db: Database) -> None:
    for _ in range(30):
        async with own_db.transaction() as s:
            await JobRepository(s).insert(
                dataset_id=_name("d"), model_type="segmentation", priority=5, trigger_event_ids=[]
            )

    async def worker(name: str) -> list[uuid.UUID]:
        got = []
        while True:
            async with own_db.transaction() as s:
                job = await QueueRepository(s).claim(worker=name, lease=timedelta(seconds=30))
            if job is None:
                return got
            got.append(job.id)

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    claimed = [j for r in results for j in r]
    assert len(claimed) == 30 and len(set(claimed)) == 30


def _new_version(model_type: str, event_id: uuid.UUID, job_id: uuid.UUID, parent: int | None) -> NewModelVersion:
    return NewModelVersion(
        model_type=model_type,
        training_event_id=event_id,
        job_id=job_id,
        dataset_id="ds",
        parent_version=parent,
        artifact_path=f"/artifacts/{model_type}/{event_id}.skops",
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


async def _training_event(db: Database, model_type: str) -> tuple[uuid.UUID, uuid.UUID]:
    async with db.transaction() as s:
        job = await JobRepository(s).insert(
            dataset_id=_name("ds"), model_type=model_type, priority=5, trigger_event_ids=[]
        )
        event_id = uuid.uuid4()
        await s.execute(
            text(
                "INSERT INTO training_events (id, job_id, attempt, dataset_id, model_type) "
                "VALUES (:id, :job, 1, :ds, :mt)"
            ),
            {"id": event_id, "job": job.id, "ds": job.dataset_id, "mt": model_type},
        )
    return event_id, job.id


async def test_versions_number_up_and_the_champion_moves_by_compare_and_swap(db: Database) -> None:
    model_type = _name("goal")
    versions = []
    for parent in (None, 1, 2):
        event_id, job_id = await _training_event(db, model_type)
        async with db.transaction() as s:
            versions.append(await ModelVersionRepository(s).add(_new_version(model_type, event_id, job_id, parent)))
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
    with pytest.raises(ChampionMoveConflict):
        async with db.transaction() as s:
            await ChampionRepository(s).move(
                model_type=model_type, version=3, expected=first, reason=ChampionReason.VALIDATED
            )
    async with db.transaction() as s:
        current = await ChampionRepository(s).current(model_type)
        listed = await ModelVersionRepository(s).list(model_type)
    assert current is not None and current.version == 2 and current.previous_version == 1 and current == second
    assert [v.version for v in listed] == [3, 2, 1] and listed[0].parent_version == 2

    with pytest.raises(DBAPIError, match="append-only"):
        async with db.transaction() as s:
            await s.execute(text("UPDATE champion_ledger SET version = 3 WHERE model_type = :mt"), {"mt": model_type})
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.transaction() as s:
            await s.execute(text("DELETE FROM champion_ledger WHERE model_type = :mt"), {"mt": model_type})
    with pytest.raises(IntegrityError):  # a champion must be a recorded version
        async with db.transaction() as s:
            await ChampionRepository(s).move(
                model_type=model_type, version=99, expected=current, reason=ChampionReason.MANUAL
            )


async def test_validation_checks_keep_their_order_and_verdicts(db: Database) -> None:
    event_id, _ = await _training_event(db, "goal")
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
            kind="change",
        ),
        ValidationCheck(
            metric="pr_auc",
            value=None,
            baseline=0.5,
            threshold=0.0,
            direction=Direction.HIGHER_IS_BETTER,
            passed=False,
            kind="change",
        ),
    ]
    async with db.transaction() as s:
        await ValidationRepository(s).add(
            training_event_id=event_id, model_type="goal", candidate_version=None, baseline_version=None, checks=checks
        )
    async with db.transaction() as s:
        assert await ValidationRepository(s).for_training_event(event_id) == checks


async def test_outbox_hands_out_pending_messages_in_order_once_marked(own_db: Database) -> None:
    async with own_db.transaction() as s:
        outbox = OutboxRepository(s)
        added = [await outbox.add(topic="training-status", key=f"job-{i}", payload={"n": i}) for i in range(5)]
    async with own_db.transaction() as s:
        pending = await OutboxRepository(s).pending(limit=3)
        assert [m.payload["n"] for m in pending] == [0, 1, 2]
        assert all(m.payload["event_id"] == str(m.event_id) for m in pending)
        assert await OutboxRepository(s).mark_published([m.id for m in pending]) == 3
    async with own_db.transaction() as s:
        rest = await OutboxRepository(s).pending()
        assert [m.id for m in rest] == [m.id for m in added[3:]]
        assert await OutboxRepository(s).mark_published([added[0].id]) == 0  # already published


async def test_outbox_add_many_keeps_order_and_the_relay_reads_the_stored_json(own_db: Database) -> None:
    import json

    payloads = [{"n": i, "text": "naïve ✓"} for i in range(4)]
    async with own_db.transaction() as s:
        assert (
            await OutboxRepository(s).add_many([("training-status", f"k{i}", p) for i, p in enumerate(payloads)]) == 4
        )
        assert await OutboxRepository(s).add_many([]) == 0
    async with own_db.transaction() as s:
        encoded = await OutboxRepository(s).pending_encoded()
        decoded = [json.loads(m.payload_json) for m in encoded]
        assert [d["n"] for d in decoded] == [0, 1, 2, 3] and decoded[0]["text"] == "naïve ✓"
        assert [m.key for m in encoded] == ["k0", "k1", "k2", "k3"]
        # the event_id each payload got is the outbox key
        assert [d["event_id"] for d in decoded] == [p["event_id"] for p in payloads]
        assert all(uuid.UUID(d["event_id"]) for d in decoded)


async def test_recent_jobs_come_newest_first_with_their_triggers(own_db: Database) -> None:
    from storage.entities import TriggerRequest

    async with own_db.transaction() as s:
        await JobRepository(s).admit([TriggerRequest(event_id="e1", dataset_id="a", model_type="goal", priority=3)])
    async with own_db.transaction() as s:
        await JobRepository(s).admit(
            [
                TriggerRequest(event_id="e2", dataset_id="b", model_type="goal", priority=5),
                TriggerRequest(event_id="e3", dataset_id="b", model_type="goal", priority=7),
            ]
        )
    async with own_db.transaction() as s:
        jobs = await JobRepository(s).recent(limit=10)
        assert [(j.dataset_id, j.priority, j.trigger_event_ids) for j in jobs] == [
            ("b", 7, ("e2", "e3")),
            ("a", 3, ("e1",)),
        ]
        assert len(await JobRepository(s).recent(limit=1)) == 1


async def test_admission_is_planned_per_call(db: Database) -> None:
    # A generic plan cached while job_triggers was small would scan it on every admission.
    async with db.transaction() as s:
        config = await s.scalar(text("SELECT proconfig FROM pg_proc WHERE proname = 'fcl_admit_trigger'"))
    assert config == ["plan_cache_mode=force_custom_plan"]
