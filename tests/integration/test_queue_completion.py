"""The completion as one statement: the server-side function `fcl_complete_job` (migration 0025),
run by the trainer worker's `WorkerStore.complete` on its own, against the real PostgreSQL. What it
writes is held to what the Python builders build (the status event, the validation event, the
version event, the version and its checks); what it refuses is refused with the errors the worker
acts on; concurrent completions of one model type take distinct numbers and one champion move."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from fcl.contract.enums import ChampionReason, JobStatus, VerdictKind
from fcl.contract.events import (
    Drift,
    ModelVersionEvent,
    TrainingStatusEvent,
    TrainingValidationEvent,
    rfc3339,
)
from fcl.storage.db import Database
from fcl.storage.entities import Candidate, CompletedAttempt, Job, StoredArtifactRef
from fcl.storage.errors import ChampionMoved, JobStateConflict, LeaseLost
from fcl.storage.queue import status_event
from fcl.storage.registry import ChampionRepository, ModelVersionRepository, ValidationRepository
from fcl.storage.stores.worker import WorkerStore
from tests import factories

LEASE = timedelta(minutes=5)
IGNORE = {"event_id", "occurred_at"}


def attempt(
    *, passed: bool, validated_against: int, watermark: int = 1, verdict: VerdictKind = VerdictKind.PASSED
) -> CompletedAttempt:
    return CompletedAttempt(
        started_at=datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC),
        duration_seconds=2.5,
        dataset_watermark=watermark,
        validated_against=validated_against,
        candidate=Candidate(
            fit_seconds=1.25,
            sample_count=3,
            metrics={"roc_auc": 0.81, "brier": 0.12},
            baseline_metrics={"roc_auc": 0.5},
            checks=(
                factories.check("roc_auc", 0.81, 0.6, passed),
                factories.check("brier", 0.12, 0.0, True),
            ),
            passed=passed,
            hyperparameters={"n_estimators": 10, "nested": {"a": [1, 2]}},
            dataset_hash="h" * 8,
            seed=7,
            library_versions={"sklearn": "1.5"},
            code_version="abc",
            artifact=StoredArtifactRef(path=f"/a/{uuid.uuid4()}", sha256="cd" * 32, size=123, format="skops"),
            verdict=verdict,
            verdict_message=None if verdict is VerdictKind.PASSED else "the champion could not be read",
            info={"family": "random_forest"},
            profile={"features": {"x": {"edges": [0.0], "shares": [0.5, 0.5], "count": 3, "mean": 1.0}}},
            drift=Drift(reference_version=1, psi={"x": 0.05}, psi_max=0.05, level="stable"),
        ),
    )


async def running_job(db: Database, dataset: str, model_type: str = "goal") -> Job:
    await factories.store(db, dataset, model_type, count=3)
    return await factories.lease(db, (await factories.admit(db, dataset, model_type)).job_id, worker="box-1")


async def outbox_since(db: Database, after: int) -> list[Any]:
    async with db.transaction() as s:
        return list(
            (
                await s.execute(
                    text("SELECT id, event_id, topic, key, payload FROM outbox WHERE id > :a ORDER BY id"), {"a": after}
                )
            ).all()
        )


async def last_outbox_id(db: Database) -> int:
    async with db.transaction() as s:
        return int(await s.scalar(text("SELECT coalesce(max(id), 0) FROM outbox")) or 0)


async def test_a_promoting_completion_writes_what_the_python_builders_build(own_db: Database) -> None:
    first = await factories.record_version(own_db, "goal")  # v1, the champion (ledger seq 1)
    assert first.promoted and first.model_version == 1
    job = await running_job(own_db, "ds-one-trip")
    done_before = await last_outbox_id(own_db)
    result = attempt(passed=True, validated_against=1)

    done = await WorkerStore(own_db).complete(job.lease, result)

    assert done.job.status is JobStatus.COMPLETED and done.job.lease_token is None and done.job.progress == 1.0
    assert (done.model_version, done.job.model_version, done.promoted, done.events) == (2, 2, True, 3)
    assert done.job.trigger_event_ids == job.trigger_event_ids and done.job.reason == job.reason
    rows = await outbox_since(own_db, done_before)
    assert [r.topic for r in rows] == ["training-status", "training-validation", "model-versions"]
    assert all(str(r.event_id) == r.payload["event_id"] for r in rows)

    status, validation, moved = (r.payload for r in rows)
    TrainingStatusEvent.model_validate(status)
    _, key, expected = status_event(
        done.job,
        JobStatus.COMPLETED,
        progress=1.0,
        message="version 2 promoted to champion",
        training_event_id=done.training_event_id,
        model_version=2,
    )
    assert rows[0].key == key == str(job.id)
    assert {k: v for k, v in status.items() if k not in IGNORE} == {
        k: v for k, v in expected.items() if k not in IGNORE
    }

    parsed = TrainingValidationEvent.model_validate(validation)
    assert rows[1].key == str(job.id)
    assert (parsed.training_event_id, parsed.model_type, parsed.candidate_version, parsed.baseline_version) == (
        str(done.training_event_id),
        "goal",
        2,
        1,
    )
    assert parsed.checks == list(result.candidate.checks) and parsed.metrics == result.candidate.metrics
    assert parsed.drift == result.candidate.drift and (parsed.passed, parsed.promoted) == (True, True)

    async with own_db.transaction() as s:
        ledger = await ChampionRepository(s).current("goal")
        version = await ModelVersionRepository(s).get("goal", 2)
        checks = await ValidationRepository(s).for_training_event(done.training_event_id)  # type: ignore[arg-type]
        event = (
            await s.execute(text("SELECT * FROM training_events WHERE id = :id"), {"id": done.training_event_id})
        ).one()
    assert ledger is not None and (ledger.seq, ledger.version, ledger.previous_version) == (2, 2, 1)
    assert ledger.reason is ChampionReason.VALIDATED and ledger.actor == f"job {job.id} on box-1"
    assert rows[2].key == "goal" and moved == ModelVersionEvent(
        event_id=str(ledger.event_id),
        model_type="goal",
        version=2,
        previous_version=1,
        reason=ChampionReason.VALIDATED,
        occurred_at=rfc3339(ledger.created_at),
    ).model_dump(mode="json")

    c = result.candidate
    assert version is not None and version.training_event_id == done.training_event_id
    assert (version.parent_version, version.job_id, version.dataset_id) == (1, job.id, "ds-one-trip")
    assert (version.artifact_path, version.artifact_sha256, version.artifact_size, version.artifact_format) == (
        c.artifact.path,
        c.artifact.sha256,
        c.artifact.size,
        c.artifact.format,
    )
    assert (version.metrics, version.hyperparameters, version.info, version.profile) == (
        c.metrics,
        c.hyperparameters,
        c.info,
        c.profile,
    )
    assert (version.dataset_watermark, version.dataset_hash, version.seed, version.library_versions) == (
        1,
        c.dataset_hash,
        c.seed,
        c.library_versions,
    )
    assert version.code_version == c.code_version
    assert checks == list(c.checks)
    assert (event.status, event.attempt, event.worker, event.model_version) == ("completed", 1, "box-1", 2)
    assert (event.started_at, event.duration_seconds, event.fit_seconds, event.sample_count) == (
        result.started_at,
        2.5,
        1.25,
        3,
    )
    assert (event.validation_passed, event.promoted, event.verdict, event.verdict_message) == (
        True,
        True,
        "passed",
        None,
    )
    assert event.metrics == c.metrics and event.drift == c.drift.model_dump(mode="json")  # type: ignore[union-attr]
    assert event.dataset_watermark == 1 and event.error_type is None


async def test_a_refused_candidate_is_recorded_without_a_move_and_its_samples_come_off_the_counter(
    own_db: Database,
) -> None:
    await factories.store(own_db, "ds-refused", "goal", count=5, threshold=100)
    job = await factories.lease(own_db, (await factories.admit(own_db, "ds-refused", "goal")).job_id)
    async with own_db.transaction() as s:
        watermark = int(await s.scalar(text("SELECT max(id) FROM training_samples")) or 0)
    before = await last_outbox_id(own_db)
    result = attempt(passed=True, validated_against=0, watermark=watermark, verdict=VerdictKind.CHAMPION_UNREADABLE)

    done = await WorkerStore(own_db).complete(job.lease, result)

    assert (done.model_version, done.promoted, done.events) == (1, False, 2)
    rows = await outbox_since(own_db, before)
    assert [r.topic for r in rows] == ["training-status", "training-validation"]
    assert rows[0].payload["message"] == (
        "version 1 not promoted (champion_unreadable): the champion could not be read"
    )
    assert rows[1].payload["baseline_version"] is None and rows[1].payload["promoted"] is False
    async with own_db.transaction() as s:
        assert await ChampionRepository(s).current("goal") is None
        dataset = (await s.execute(text("SELECT * FROM datasets WHERE dataset_id = 'ds-refused'"))).one()
        version = await ModelVersionRepository(s).get("goal", 1)
    assert (dataset.samples_since_training, dataset.trained_watermark) == (0, watermark)
    assert dataset.last_trained_at is not None
    assert version is not None and version.parent_version is None


async def test_the_function_refuses_what_the_worker_must_not_record_and_writes_nothing(own_db: Database) -> None:
    store = WorkerStore(own_db)
    await factories.record_version(own_db, "goal")  # the champion: ledger seq 1
    job = await running_job(own_db, "ds-refusals")

    async def written() -> tuple[int, int, int]:
        async with own_db.transaction() as s:
            counts = (
                await s.execute(
                    text(
                        "SELECT (SELECT count(*) FROM model_versions), (SELECT count(*) FROM training_events), "
                        "(SELECT count(*) FROM outbox)"
                    )
                )
            ).one()
        return (counts[0], counts[1], counts[2])

    before = await written()
    with pytest.raises(ChampionMoved, match="champion moved"):  # validated against no champion
        await store.complete(job.lease, attempt(passed=True, validated_against=0))
    with pytest.raises(LeaseLost, match="not held"):
        await store.complete(replace(job.lease, token=uuid.uuid4()), attempt(passed=True, validated_against=1))
    async with own_db.transaction() as s:  # this attempt already has an outcome
        await s.execute(
            text("""
            INSERT INTO training_events (id, job_id, attempt, dataset_id, model_type, status, started_at)
            VALUES (gen_random_uuid(), :job, 1, 'ds-refusals', 'goal', 'failed', now())"""),
            {"job": job.id},
        )
    with pytest.raises(JobStateConflict, match="already has a recorded outcome"):
        await store.complete(job.lease, attempt(passed=True, validated_against=1))
    after = await written()
    assert after == (before[0], before[1] + 1, before[2])  # the row this test inserted, nothing else
    async with own_db.transaction() as s:
        assert await s.scalar(text("SELECT status FROM training_jobs WHERE id = :id"), {"id": job.id}) == "in_progress"


async def test_concurrent_completions_take_distinct_numbers_and_one_champion_move(own_db: Database) -> None:
    store = WorkerStore(own_db)
    jobs = [await running_job(own_db, f"ds-race-{i}") for i in range(4)]
    results = await asyncio.gather(
        *(store.complete(j.lease, attempt(passed=True, validated_against=0)) for j in jobs), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and won[0].model_version == 1 and won[0].promoted
    assert len(lost) == 3 and all(isinstance(e, ChampionMoved) for e in lost), lost
    # validated again against the new champion, the refused ones complete with their own numbers
    others = [j for j, r in zip(jobs, results, strict=True) if isinstance(r, BaseException)]
    again = await asyncio.gather(*(store.complete(j.lease, attempt(passed=False, validated_against=1)) for j in others))
    assert sorted(t.model_version for t in again) == [2, 3, 4]  # type: ignore[type-var]
    async with own_db.transaction() as s:
        ledger = await ChampionRepository(s).history("goal")
    assert [m.version for m in ledger] == [1]


async def test_samples_that_came_during_the_training_queue_the_next_job_after_a_one_trip_completion(
    own_db: Database,
) -> None:
    await factories.store(own_db, "ds-ready", "goal", count=10, threshold=10)
    job = await factories.lease(own_db, (await factories.admit(own_db, "ds-ready", "goal")).job_id)
    async with own_db.transaction() as s:
        watermark = int(await s.scalar(text("SELECT max(id) FROM training_samples")) or 0)
    await factories.store(own_db, "ds-ready", "goal", count=10, threshold=10)  # arrived during the training
    done = await WorkerStore(own_db).complete(
        job.lease, attempt(passed=False, validated_against=0, watermark=watermark)
    )
    assert done.job.status is JobStatus.COMPLETED
    nxt = await WorkerStore(own_db).claim("w2", lease=LEASE, caps={})
    assert nxt is not None and nxt.dataset_id == "ds-ready" and nxt.id != job.id
    assert nxt.trigger_event_ids == (f"ready:ds-ready:{20}",) and nxt.reason == {
        "kind": "threshold",
        "total_samples": 20,
    }
    assert nxt.lease_owner == "w2" and nxt.attempts == 1 and nxt.status is JobStatus.IN_PROGRESS


async def test_a_jobs_inputs_are_read_in_one_statement_as_the_repositories_read_them(own_db: Database) -> None:
    store = WorkerStore(own_db)
    unknown = await store.inputs(replace(await running_job(own_db, "ds-inputs"), dataset_id="ds-nowhere"))
    assert (unknown.watermark, unknown.champion, unknown.shape_from_id, unknown.shape_version) == (0, None, 0, 1)
    job = await running_job(own_db, "ds-inputs-2", "spending")
    first = await store.inputs(job)
    async with own_db.transaction() as s:
        newest = int(await s.scalar(text("SELECT max(id) FROM training_samples WHERE dataset_id = 'ds-inputs-2'")))
        await s.execute(
            text("UPDATE datasets SET shape_from_id = 2, shape_version = 3 WHERE dataset_id = 'ds-inputs-2'")
        )
    assert first.champion is None and first.watermark == newest > 0
    await factories.record_version(own_db, "spending")
    await factories.record_version(own_db, "spending")  # v2 is the champion now
    after = await store.inputs(job)
    async with own_db.transaction() as s:
        move = await ChampionRepository(s).current("spending")
        version = await ModelVersionRepository(s).get("spending", 2)
    assert after.champion is not None and move is not None and version is not None
    assert (after.champion.move, after.champion.version) == (move, version)
    assert (after.watermark, after.shape_from_id, after.shape_version) == (newest, 2, 3)


async def test_a_plain_connection_the_server_dropped_is_replaced_not_handed_out_again(own_db: Database) -> None:
    """The worker's claim and completion and the streams' admission run on plain asyncpg
    connections of the pool, which the ORM session does not watch: one the server dropped fails
    its statement once, then the pool opens a new one (without pre-ping, as the services run)."""
    from fcl.storage.db import Statement
    from fcl.storage.errors import DatabaseUnavailable

    db = Database(own_db.url, pool_size=1, max_overflow=0, pre_ping=False)
    pid = Statement("SELECT pg_backend_pid() AS pid")
    try:
        for kind in ("row", "transaction"):
            before = (await db.row(pid, {}))["pid"]
            async with own_db.transaction() as s:
                assert await s.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": before})
            with pytest.raises(DatabaseUnavailable):
                if kind == "row":
                    await db.row(pid, {})
                else:
                    async with db.plain_transaction() as conn:
                        await conn.fetchval("SELECT 1")
            async with db.plain_transaction() as conn:
                after = await conn.fetchval("SELECT pg_backend_pid()")
            assert after != before and (await db.row(pid, {}))["pid"] == after
    finally:
        await db.close()
