"""The read views PostgreSQL builds (storage.reads) against the same views built the long way, from
the ORM readers of tests/oracle.py through web.schemas' pydantic models, on one database state with
every kind of row: waiting, running, completed, failed and cancelled jobs, passed and refused
versions, a manual promote, a version the retention removed, and live and stale workers. And the
maintained job counts against a full count, after transitions made by many transactions at once."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text

from fcl.contract import model_types
from fcl.contract.enums import ChampionReason, JobStatus
from fcl.contract.events import TrainingStatusEvent
from fcl.storage.db import Database, asyncpg_dsn
from fcl.storage.entities import EndedAttempt, TriggerRequest
from fcl.storage.jobs import JobRepository, WorkerRepository
from fcl.storage.notifications import QUEUED_CHANNEL
from fcl.storage.queue import JobQueue, status_event
from fcl.storage.reads import ReadViews
from fcl.storage.registry import ChampionRepository, ModelVersionRepository, RetentionRepository
from fcl.web import schemas as s
from tests import factories, oracle

SEEN = 45.0


async def _every_kind_of_row(db: Database) -> None:
    for priority, dataset in enumerate(["w-a", "w-b", "w-c"]):
        await factories.admit(db, dataset, "goal", priority)
    await factories.admit(db, "w-a", "goal", 9, "second-trigger-of-w-a")  # joins: two trigger ids
    running = await factories.lease(db, (await factories.admit(db, "r-a", "spending")).job_id, worker="box-1")
    async with db.transaction() as session:
        await JobQueue(session).heartbeat(running.lease, lease_for=timedelta(minutes=5), progress=0.25)
    for auc in (0.71, 0.74):
        await factories.record_version(db, "goal", passed=True, auc=auc)
    await factories.record_version(db, "goal", passed=False, auc=0.5)
    await factories.record_version(db, "segmentation", passed=True, auc=0.9)
    await factories.failed_attempt(db, "f-a", "goal")
    cancelled = await factories.admit(db, "c-a", "segmentation")
    async with db.transaction() as session:
        await JobQueue(session).cancel(cancelled.job_id)
        await ChampionRepository(session).move(
            model_type="goal",
            version=1,
            expected=await ChampionRepository(session).current("goal"),
            reason=ChampionReason.MANUAL,
            note='a reason with "quotes" and ünïcödé',
            actor="ops@example (fcl cli)",
        )
        await RetentionRepository(session).mark("goal", keep_versions=1, keep_days=0)
        await WorkerRepository(session).beat(
            worker_id="box-1", hostname="box", pid=7, current_job_ids=[running.id], info={"slots": 1}
        )
        await WorkerRepository(session).beat(worker_id="gone", hostname="old", pid=8, current_job_ids=[], info={})
        await session.execute(
            text("UPDATE worker_heartbeats SET last_seen_at = now() - interval '1 hour' WHERE worker_id = 'gone'")
        )
        # A timestamp without microseconds is written without a fraction, as pydantic does.
        await session.execute(text("UPDATE training_jobs SET run_after = date_trunc('second', run_after)"))


async def _job_views(db: Database, jobs: list[Any]) -> list[dict[str, Any]]:
    async with db.transaction() as session:
        repo = JobRepository(session)
        full = [await repo.get(j.id) for j in jobs]
    return [s.JobView.of(j).model_dump(mode="json") for j in full if j is not None]


async def _status_the_long_way(db: Database) -> dict[str, Any]:
    async with db.transaction() as session:
        counts = await oracle.job_counts(session)
        waiting = await oracle.job_waiting(session, limit=20)
        running = await oracle.job_running(session)
        workers = await oracle.worker_seen_since(session, SEEN)
        champions = await oracle.champion_all_current(session)
        last = await oracle.trainingevent_latest_per_model_type(session, model_types.names())
    per_type = {}
    for spec in model_types.specs():
        champion = champions.get(spec.name)
        per_type[spec.name] = s.ModelTypeStatus(
            champion_version=champion.version if champion else None,
            champion_since=champion.created_at if champion else None,
            key_metric=spec.key_metric,
            higher_is_better=spec.higher_is_better,
            last_run=s.TrainingEventView.of(last[spec.name]) if spec.name in last else None,
        ).model_dump(mode="json")
    return {
        "queue": counts,
        "waiting": await _job_views(db, waiting),
        "running": await _job_views(db, running),
        "workers": [s.WorkerView.of(w).model_dump(mode="json") for w in workers],
        "model_types": per_type,
    }


async def test_the_views_postgresql_builds_are_the_views_pydantic_builds(own_db: Database) -> None:
    await _every_kind_of_row(own_db)
    reads = ReadViews(own_db)
    status = json.loads(await reads.training_status(workers_seen_seconds=SEEN))
    s.TrainingStatus.model_validate(status)  # the declared schema, field for field
    generated = datetime.fromisoformat(status.pop("generated_at"))
    assert abs((datetime.now(UTC) - generated).total_seconds()) < 60
    expected = await _status_the_long_way(own_db)
    assert status == expected
    assert [w["worker_id"] for w in status["workers"]] == ["box-1"]
    assert status["running"][0]["progress"] == 0.25 and status["running"][0]["worker"] == "box-1"
    assert len(status["waiting"][0]["trigger_event_ids"]) == 2

    for model_type in (None, "goal", "recommendation"):
        document = json.loads((await reads.model_versions(model_type)).body)
        async with own_db.transaction() as session:
            versions = await ModelVersionRepository(session).list(model_type)
            champions = await oracle.champion_all_current(session)
            ledger = await oracle.champion_ledger(session, model_type)
        served = {m: c.version for m, c in champions.items()}
        types = [model_type] if model_type else list(model_types.names())
        newest_first = sorted(versions, key=lambda v: (v.created_at, v.model_type, v.version), reverse=True)
        assert document == s.ModelVersions(
            champions={m: served.get(m) for m in types},
            versions=[s.ModelVersionView.of(v, served.get(v.model_type)) for v in newest_first],
            ledger=[s.ChampionMoveView.of(m) for m in ledger],
        ).model_dump(mode="json", exclude={"next_before", "ledger_next_before"})
        # a page at a time: the same versions, in the same order, each once
        paged, after = [], None
        while True:
            versions_page = await reads.model_versions(model_type, limit=2, after=after)
            paged += json.loads(versions_page.body)["versions"]
            if versions_page.next_versions is None:
                break
            after = versions_page.next_versions
        assert paged == document["versions"]
    assert any(v["deleted_at"] for v in json.loads((await reads.model_versions("goal")).body)["versions"])

    for model_type, status_filter in [(None, None), ("goal", None), (None, "failed"), ("goal", "completed")]:
        before: tuple[datetime, uuid.UUID] | None = None
        pages = 0
        while True:
            page = await reads.history(limit=2, model_type=model_type, status=status_filter, before=before)
            async with own_db.transaction() as session:
                events = await oracle.trainingevent_page(
                    session, limit=3, model_type=model_type, status=status_filter, before=before
                )
            assert json.loads(page.items) == [s.TrainingEventView.of(e).model_dump(mode="json") for e in events[:2]]
            assert (page.last is not None) == (len(events) > 2)
            pages += 1
            if page.last is None:
                break
            assert page.last == (events[1].started_at, events[1].id)
            before = page.last
        assert pages >= 1


async def _counted(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    async with db.transaction() as session:
        rows = (
            await session.execute(text("SELECT status, sum(jobs) AS jobs FROM job_status_counts GROUP BY status"))
        ).all()
        summary = {r.status: int(r.jobs) for r in rows}
        return summary, await oracle.job_counts(session)


async def _by_type(db: Database) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """/metrics' maintained jobs per model type and status, and the same counted the long way."""
    async with db.transaction() as session:
        kept = {
            (r.model_type, r.status): int(r.jobs)
            for r in (
                await session.execute(
                    text("SELECT model_type, status, sum(jobs) AS jobs FROM job_type_counts GROUP BY 1, 2")
                )
            ).all()
            if r.jobs
        }
        counted = {
            (r.model_type, r.status): int(r.n)
            for r in (
                await session.execute(text("SELECT model_type, status, count(*) AS n FROM training_jobs GROUP BY 1, 2"))
            ).all()
        }
        return kept, counted


async def test_the_maintained_job_counts_equal_a_full_count_after_concurrent_transitions(own_db: Database) -> None:
    async def one_life(i: int) -> None:
        dataset = f"ds-{i % 7}"
        await factories.admit(own_db, dataset, ("goal", "spending")[i % 7 % 2], i % 10)
        claimed = await factories.claim(own_db, f"w{i}")
        if claimed is not None and i % 3 == 0:
            async with own_db.transaction() as session:
                await JobQueue(session).cancel(claimed.id)

    await asyncio.gather(*(one_life(i) for i in range(60)))
    summary, counted = await _counted(own_db)
    assert {k: v for k, v in summary.items() if v} == {k: v for k, v in counted.items() if v}
    assert sum(counted.values()) > 0
    kept, by_type = await _by_type(own_db)
    assert kept == by_type and {t for t, _ in by_type} == {"goal", "spending"}
    async with own_db.transaction() as session:
        await session.execute(text("UPDATE training_jobs SET progress = 0.5"))  # no status change: no counts
        await session.execute(text("DELETE FROM training_jobs WHERE status = 'queued'"))
    summary, counted = await _counted(own_db)
    assert {k: v for k, v in summary.items() if v} == {k: v for k, v in counted.items() if v}
    kept, by_type = await _by_type(own_db)
    assert kept == by_type
    async with own_db.transaction() as session:
        await session.execute(text("TRUNCATE training_jobs CASCADE"))
    summary, _ = await _counted(own_db)
    assert set(summary.values()) <= {0}
    assert await _by_type(own_db) == ({}, {})


async def test_the_queued_event_admission_builds_in_sql_is_the_one_status_event_builds(own_db: Database) -> None:
    async with own_db.transaction() as session:
        batch = await JobQueue(session).admit(
            [TriggerRequest(event_id=f"t{i}", dataset_id=f"ds-{i}", model_type="goal", priority=5) for i in range(50)]
        )
        events = (await session.execute(text("SELECT payload->>'job_id' AS job, event_id FROM outbox"))).all()
    assert {e.job for e in events} == {str(a.job_id) for a in batch} and len({e.event_id for e in events}) == 50
    admitted = await factories.admit(own_db, "ds-q", "spending", 7, "trigger-q")
    async with own_db.transaction() as session:
        job = await JobRepository(session).get(admitted.job_id)
        rows = (
            await session.execute(
                text("SELECT event_id, key, payload FROM outbox WHERE topic = 'training-status' AND key = :job"),
                {"job": str(admitted.job_id)},
            )
        ).all()
    assert job is not None and len(rows) == 1
    event_id, key = rows[0].event_id, rows[0].key
    payload: dict[str, Any] = rows[0].payload
    TrainingStatusEvent.model_validate(payload)
    _, expected_key, expected = status_event(job, JobStatus.QUEUED, attempt=1, message="queued")
    assert key == expected_key and payload["event_id"] == str(event_id)
    occurred = datetime.fromisoformat(payload["occurred_at"])
    assert abs((occurred - job.created_at).total_seconds()) < 5
    ignore = {"event_id", "occurred_at"}
    assert {k: v for k, v in payload.items() if k not in ignore} == {
        k: v for k, v in expected.items() if k not in ignore
    }


async def test_the_claim_is_one_statement_and_its_event_is_the_one_status_event_builds(own_db: Database) -> None:
    await factories.admit(own_db, "ds-c", "goal", 4)
    async with own_db.transaction() as session:
        before: int = (await session.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
    claimed = await factories.claim(own_db, "box-9")
    assert claimed is not None and claimed.attempts == 1 and claimed.trigger_event_ids
    async with own_db.transaction() as session:
        rows = (await session.execute(text("SELECT payload FROM outbox ORDER BY id"))).all()
    assert len(rows) == before + 1
    payload: dict[str, Any] = rows[-1].payload
    TrainingStatusEvent.model_validate(payload)
    _, _, expected = status_event(claimed, JobStatus.IN_PROGRESS, progress=0.0, message="claimed by box-9")
    ignore = {"event_id", "occurred_at"}
    assert {k: v for k, v in payload.items() if k not in ignore} == {
        k: v for k, v in expected.items() if k not in ignore
    }


async def test_queueing_a_job_notifies_the_trainer_workers_and_a_heartbeat_does_not(own_db: Database) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(own_db.url))
    await listener.add_listener(QUEUED_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    try:
        admitted = await factories.admit(own_db, "ds-n", "goal")
        assert await asyncio.wait_for(heard.get(), 10) == ""
        job = await factories.lease(own_db, admitted.job_id)
        async with own_db.transaction() as session:
            await JobQueue(session).heartbeat(job.lease, lease_for=timedelta(minutes=5), progress=0.5)
        await asyncio.sleep(0.5)
        assert heard.empty()  # the lease and a heartbeat queue nothing
        async with own_db.transaction() as session:
            await JobQueue(session).release(
                job.lease,
                EndedAttempt(
                    started_at=datetime.now(UTC), duration_seconds=0.1, error_type="Shutdown", message="stopping"
                ),
            )  # back in the queue: the workers hear it
        assert await asyncio.wait_for(heard.get(), 10) == ""
    finally:
        await listener.close()
