"""The queue as trainer workers use it, against the real PostgreSQL: claims in priority order with
caps, leases that expire and are reclaimed, lease-checked writes, retries, cancellation, drain,
and merging a job that goes back into the one already waiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from storage.db import Database
from storage.entities import JobStatus, TriggerRequest
from storage.migrate import upgrade
from storage.repositories import JobRepository, QueueRepository
from tests.conftest import RunStack, create_database, drop_database

LEASE = timedelta(minutes=5)


@pytest.fixture
async def qdb(stack: RunStack) -> AsyncIterator[Database]:
    name = f"fcl_queue_{uuid.uuid4().hex[:10]}"
    url = await asyncio.to_thread(create_database, stack.server_url, name)
    await asyncio.to_thread(upgrade, url)
    database = Database(url, pool_size=4)
    try:
        yield database
    finally:
        await database.close()
        await asyncio.to_thread(drop_database, stack.server_url, name)


async def admit(db: Database, dataset: str, priority: int = 5, model_type: str = "goal", event: str | None = None):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        [a] = await JobRepository(s).admit([TriggerRequest(event_id=event or str(uuid.uuid4()), dataset_id=dataset,
                                                           model_type=model_type, priority=priority)])
        return a


async def claim(db: Database, worker: str = "w1", caps: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return await QueueRepository(s).claim(worker=worker, lease=LEASE, caps=caps)


async def test_claims_follow_priority_then_age_and_respect_caps(qdb: Database) -> None:
    for name, priority, model_type in [("a", 3, "goal"), ("b", 7, "goal"), ("c", 7, "spending"), ("d", 9, "goal")]:
        await admit(qdb, name, priority, model_type)
    order = [(await claim(qdb, caps={"goal": 2})) for _ in range(4)]
    # d (9) then b (7, older than c); goal is then at its cap of 2, so c goes next, and a waits
    assert [j.dataset_id if j else None for j in order] == ["d", "b", "c", None]
    assert all(j.status is JobStatus.IN_PROGRESS and j.attempts == 1 and j.lease_token for j in order[:3] if j)


async def test_a_lost_lease_records_nothing(qdb: Database) -> None:
    await admit(qdb, "ds")
    first = await claim(qdb, "w1")
    assert first is not None and first.lease_token is not None
    async with qdb.transaction() as s:
        assert await QueueRepository(s).heartbeat(first.id, first.lease_token, lease=LEASE, progress=0.3) == (True, False)
        await s.execute(text("UPDATE training_jobs SET lease_expires_at = now() - interval '1 second'"))
    async with qdb.transaction() as s:
        [(requeued, merged)] = await QueueRepository(s).expire_leases()
    assert requeued.status is JobStatus.QUEUED and requeued.attempts == 1 and merged is None
    assert requeued.error_type == "LeaseExpired"
    second = await claim(qdb, "w2")
    assert second is not None and second.id == first.id and second.attempts == 2
    async with qdb.transaction() as s:
        q = QueueRepository(s)
        assert await q.heartbeat(first.id, first.lease_token, lease=LEASE) == (False, False)
        assert await q.complete(first.id, first.lease_token, model_version=1) is None
        assert await q.fail(first.id, first.lease_token, error_type="X", message="y", retry_in=None) is None
    async with qdb.transaction() as s:
        done = await QueueRepository(s).complete(second.id, second.lease_token, model_version=1)  # type: ignore[arg-type]
    assert done is not None and done.status is JobStatus.COMPLETED and done.model_version == 1


async def test_failures_retry_after_a_delay_until_attempts_run_out(qdb: Database) -> None:
    await admit(qdb, "flaky")
    job = await claim(qdb)
    assert job is not None
    async with qdb.transaction() as s:
        result = await QueueRepository(s).fail(job.id, job.lease_token, error_type="RuntimeError", message="boom",  # type: ignore[arg-type]
                                               retry_in=timedelta(seconds=30))
    assert result is not None
    again, _ = result
    assert again.status is JobStatus.QUEUED and again.error_type == "RuntimeError" and again.attempts == 1
    assert (again.run_after - again.updated_at) >= timedelta(seconds=29)
    assert await claim(qdb) is None  # not before its time
    async with qdb.transaction() as s:
        await s.execute(text("UPDATE training_jobs SET run_after = now(), attempts = max_attempts - 1"))
    last = await claim(qdb)
    assert last is not None and last.attempts == last.max_attempts
    async with qdb.transaction() as s:
        final, _ = await QueueRepository(s).fail(last.id, last.lease_token, error_type="RuntimeError",  # type: ignore[misc, arg-type]
                                                 message="boom again", retry_in=timedelta(seconds=1))
    assert final.status is JobStatus.FAILED and final.error_message == "boom again"


async def test_cancel_a_waiting_job_at_once_and_a_running_one_through_its_worker(qdb: Database) -> None:
    waiting = await admit(qdb, "w")
    await admit(qdb, "r", priority=9)
    running = await claim(qdb)
    assert running is not None and running.dataset_id == "r"
    async with qdb.transaction() as s:
        q = QueueRepository(s)
        cancelled = await q.cancel(waiting.job_id)
        asked = await q.cancel(running.id)
        assert await q.cancel(uuid.uuid4()) is None
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert asked is not None and asked.status is JobStatus.IN_PROGRESS and asked.cancel_requested
    async with qdb.transaction() as s:
        q = QueueRepository(s)
        assert await q.heartbeat(running.id, running.lease_token, lease=LEASE) == (True, True)  # type: ignore[arg-type]
        stopped = await q.finish_cancelled(running.id, running.lease_token)  # type: ignore[arg-type]
    assert stopped is not None and stopped.status is JobStatus.CANCELLED and stopped.model_version is None


async def test_release_puts_a_job_back_without_counting_the_attempt(qdb: Database) -> None:
    await admit(qdb, "drain")
    job = await claim(qdb)
    assert job is not None
    async with qdb.transaction() as s:
        back, merged = await QueueRepository(s).release(job.id, job.lease_token)  # type: ignore[misc, arg-type]
    assert back.status is JobStatus.QUEUED and back.attempts == 0 and back.lease_token is None and merged is None
    again = await claim(qdb)
    assert again is not None and again.id == job.id and again.attempts == 1


async def test_a_job_going_back_merges_into_the_follow_up_already_waiting(qdb: Database) -> None:
    first = await admit(qdb, "ds", priority=8, event="e1")
    running = await claim(qdb)
    assert running is not None and running.id == first.job_id
    follow_up = await admit(qdb, "ds", priority=2, event="e2")  # one follow-up while one runs
    assert follow_up.job_id != first.job_id
    async with qdb.transaction() as s:
        gone, into = await QueueRepository(s).release(running.id, running.lease_token)  # type: ignore[misc, arg-type]
    assert gone.status is JobStatus.CANCELLED and gone.error_type == "Merged"
    assert into is not None and into.id == follow_up.job_id
    assert into.priority == 8 and set(into.trigger_event_ids) == {"e1", "e2"}
