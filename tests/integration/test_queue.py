"""The queue as trainer workers use it, against the real PostgreSQL: claims in priority order with
caps, leases that expire and are reclaimed, lease-checked writes, retries, cancellation, drain,
and merging a job that goes back into the one already waiting."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text

from storage.db import Database
from storage.entities import JobStatus, TriggerRequest
from storage.repositories import JobRepository, QueueRepository

LEASE = timedelta(minutes=5)


async def admit(db: Database, dataset: str, priority: int = 5, model_type: str = "goal", event: str | None = None):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        [a] = await JobRepository(s).admit(
            [
                TriggerRequest(
                    event_id=event or str(uuid.uuid4()), dataset_id=dataset, model_type=model_type, priority=priority
                )
            ]
        )
        return a


async def claim(db: Database, worker: str = "w1", caps: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return await QueueRepository(s).claim(worker=worker, lease=LEASE, caps=caps)


async def test_claims_follow_priority_then_age_and_respect_caps(own_db: Database) -> None:
    for name, priority, model_type in [("a", 3, "goal"), ("b", 7, "goal"), ("c", 7, "spending"), ("d", 9, "goal")]:
        await admit(own_db, name, priority, model_type)
    order = [(await claim(own_db, caps={"goal": 2})) for _ in range(4)]
    # d (9) then b (7, older than c); goal is then at its cap of 2, so c goes next, and a waits
    assert [j.dataset_id if j else None for j in order] == ["d", "b", "c", None]
    assert all(j.status is JobStatus.IN_PROGRESS and j.attempts == 1 and j.lease_token for j in order[:3] if j)


async def test_a_lost_lease_records_nothing(own_db: Database) -> None:
    await admit(own_db, "ds")
    first = await claim(own_db, "w1")
    assert first is not None and first.lease_token is not None
    async with own_db.transaction() as s:
        assert await QueueRepository(s).heartbeat(first.id, first.lease_token, lease=LEASE, progress=0.3) == (
            True,
            False,
        )
        await s.execute(text("UPDATE training_jobs SET lease_expires_at = now() - interval '1 second'"))
    async with own_db.transaction() as s:
        [(requeued, merged)] = await QueueRepository(s).expire_leases()
    assert requeued.status is JobStatus.QUEUED and requeued.attempts == 1 and merged is None
    assert requeued.error_type == "LeaseExpired"
    second = await claim(own_db, "w2")
    assert second is not None and second.id == first.id and second.attempts == 2
    async with own_db.transaction() as s:
        q = QueueRepository(s)
        assert await q.heartbeat(first.id, first.lease_token, lease=LEASE) == (False, False)
        assert await q.complete(first.id, first.lease_token, model_version=1) is None
        assert await q.fail(first.id, first.lease_token, error_type="X", message="y", retry_in=None) is None
    async with own_db.transaction() as s:
        done = await QueueRepository(s).complete(second.id, second.lease_token, model_version=1)  # type: ignore[arg-type]
    assert done is not None and done.status is JobStatus.COMPLETED and done.model_version == 1


async def test_failures_retry_after_a_delay_until_attempts_run_out(own_db: Database) -> None:
    await admit(own_db, "flaky")
    job = await claim(own_db)
    assert job is not None
    async with own_db.transaction() as s:
        result = await QueueRepository(s).fail(
            job.id,
            job.lease_token,
            error_type="RuntimeError",
            message="boom",  # type: ignore[arg-type]
            retry_in=timedelta(seconds=30),
        )
    assert result is not None
    again, _ = result
    assert again.status is JobStatus.QUEUED and again.error_type == "RuntimeError" and again.attempts == 1
    assert (again.run_after - again.updated_at) >= timedelta(seconds=29)
    assert await claim(own_db) is None  # not before its time
    async with own_db.transaction() as s:
        await s.execute(text("UPDATE training_jobs SET run_after = now(), attempts = max_attempts - 1"))
    last = await claim(own_db)
    assert last is not None and last.attempts == last.max_attempts
    async with own_db.transaction() as s:
        final, _ = await QueueRepository(s).fail(
            last.id,
            last.lease_token,
            error_type="RuntimeError",  # type: ignore[misc, arg-type]
            message="boom again",
            retry_in=timedelta(seconds=1),
        )
    assert final.status is JobStatus.FAILED and final.error_message == "boom again"


async def test_cancel_a_waiting_job_at_once_and_a_running_one_through_its_worker(own_db: Database) -> None:
    waiting = await admit(own_db, "w")
    await admit(own_db, "r", priority=9)
    running = await claim(own_db)
    assert running is not None and running.dataset_id == "r"
    async with own_db.transaction() as s:
        q = QueueRepository(s)
        cancelled = await q.cancel(waiting.job_id)
        asked = await q.cancel(running.id)
        assert await q.cancel(uuid.uuid4()) is None
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert asked is not None and asked.status is JobStatus.IN_PROGRESS and asked.cancel_requested
    async with own_db.transaction() as s:
        q = QueueRepository(s)
        assert await q.heartbeat(running.id, running.lease_token, lease=LEASE) == (True, True)  # type: ignore[arg-type]
        stopped = await q.finish_cancelled(running.id, running.lease_token)  # type: ignore[arg-type]
    assert stopped is not None and stopped.status is JobStatus.CANCELLED and stopped.model_version is None


async def test_release_puts_a_job_back_without_counting_the_attempt(own_db: Database) -> None:
    await admit(own_db, "drain")
    job = await claim(own_db)
    assert job is not None
    async with own_db.transaction() as s:
        back, merged = await QueueRepository(s).release(job.id, job.lease_token)  # type: ignore[misc, arg-type]
    assert back.status is JobStatus.QUEUED and back.attempts == 0 and back.lease_token is None and merged is None
    again = await claim(own_db)
    assert again is not None and again.id == job.id and again.attempts == 1


async def test_a_job_going_back_merges_into_the_follow_up_already_waiting(own_db: Database) -> None:
    first = await admit(own_db, "ds", priority=8, event="e1")
    running = await claim(own_db)
    assert running is not None and running.id == first.job_id
    follow_up = await admit(own_db, "ds", priority=2, event="e2")  # one follow-up while one runs
    assert follow_up.job_id != first.job_id
    async with own_db.transaction() as s:
        gone, into = await QueueRepository(s).release(running.id, running.lease_token)  # type: ignore[misc, arg-type]
    assert gone.status is JobStatus.CANCELLED and gone.error_type == "Merged"
    assert into is not None and into.id == follow_up.job_id
    assert into.priority == 8 and set(into.trigger_event_ids) == {"e1", "e2"}
