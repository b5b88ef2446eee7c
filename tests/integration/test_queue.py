"""The queue as trainer workers use it, against the real PostgreSQL: claims in priority order with
caps, leases that expire and are reclaimed, lease-checked writes, retries, cancellation, drain,
and merging a job that goes back into the one already waiting."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from fcl.contract.enums import JobStatus
from fcl.storage.db import Database
from fcl.storage.entities import Admission, Candidate, EndedAttempt, Job
from fcl.storage.errors import LeaseLost
from fcl.storage.queue import JobQueue
from fcl.storage.retry import RetryDecision
from tests import factories

LEASE = timedelta(minutes=5)


async def admit(
    db: Database, dataset: str, priority: int = 5, model_type: str = "goal", event: str | None = None
) -> Admission:
    return await factories.admit(db, dataset, model_type, priority, event)


async def claim(db: Database, worker: str = "w1", caps: dict[str, int] | None = None) -> Job | None:
    return await factories.claim(db, worker, lease=LEASE, caps=caps)


def ended(error_type: str = "RuntimeError", message: str = "boom") -> EndedAttempt:
    return EndedAttempt(started_at=datetime.now(UTC), duration_seconds=1.0, error_type=error_type, message=message)


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
        beat = await JobQueue(s).heartbeat(first.lease, lease_for=LEASE, progress=0.3)
        assert (beat.job.progress, beat.job.cancel_requested) == (0.3, False)
        await s.execute(text("UPDATE training_jobs SET lease_expires_at = now() - interval '1 second'"))
    async with own_db.transaction() as s:
        [expired] = await JobQueue(s).expire_leases(reclaimed_by="w2")
    requeued = expired.job
    assert requeued.status is JobStatus.QUEUED and requeued.attempts == 1 and expired.merged_into is None
    assert requeued.error_type == "LeaseExpired" and expired.training_event_id is not None
    second = await claim(own_db, "w2")
    assert second is not None and second.id == first.id and second.attempts == 2
    for transition in ("heartbeat", "complete", "fail"):  # the first worker can record nothing
        with pytest.raises(LeaseLost):
            async with own_db.transaction() as s:
                q = JobQueue(s)
                if transition == "heartbeat":
                    await q.heartbeat(first.lease, lease_for=LEASE)
                elif transition == "complete":
                    await q.complete(first.lease, await _completed(own_db, first))
                else:
                    await q.fail(first.lease, ended(), RetryDecision(retry=False))
    async with own_db.transaction() as s:
        done = await JobQueue(s).complete(second.lease, await _completed(own_db, second))
    assert done.job.status is JobStatus.COMPLETED and done.model_version == 1 == done.job.model_version
    statuses = await _statuses(own_db, first.id)
    assert statuses == [("queued", 1), ("in_progress", 1), ("queued", 2), ("in_progress", 2), ("completed", 2)]


async def _completed(db: Database, job: Job):
    from fcl.storage.entities import CompletedAttempt, StoredArtifactRef

    await factories.store(db, job.dataset_id, job.model_type)
    return CompletedAttempt(
        started_at=datetime.now(UTC),
        duration_seconds=1.0,
        dataset_watermark=1,
        validated_against=0,
        candidate=Candidate(
            fit_seconds=1.0,
            sample_count=1,
            metrics={"roc_auc": 0.7},
            baseline_metrics=None,
            checks=(factories.check("roc_auc", 0.7, 0.6, True),),
            passed=True,
            hyperparameters={},
            dataset_hash="h",
            seed=1,
            library_versions={},
            code_version="c",
            artifact=StoredArtifactRef(path="/a", sha256="ab" * 32, size=1, format="skops"),
        ),
    )


async def _statuses(db: Database, job_id: uuid.UUID) -> list[tuple[str, int]]:
    """The training-status events a job's transitions wrote to the outbox, in order."""
    async with db.transaction() as s:
        rows = (
            await s.execute(
                text("""
            SELECT payload->>'status' AS status, (payload->>'attempt')::int AS attempt FROM outbox
            WHERE topic = 'training-status' AND key = :job ORDER BY id"""),
                {"job": str(job_id)},
            )
        ).all()
    return [(r.status, r.attempt) for r in rows]


async def test_failures_retry_after_a_delay_until_attempts_run_out(own_db: Database) -> None:
    await admit(own_db, "flaky")
    job = await claim(own_db)
    assert job is not None
    async with own_db.transaction() as s:
        result = await JobQueue(s).fail(job.lease, ended(), RetryDecision(retry=True, delay=timedelta(seconds=30)))
    again = result.job
    assert again.status is JobStatus.QUEUED and again.error_type == "RuntimeError" and again.attempts == 1
    assert (again.run_after - again.updated_at) >= timedelta(seconds=29)
    assert await claim(own_db) is None  # not before its time
    async with own_db.transaction() as s:
        await s.execute(text("UPDATE training_jobs SET run_after = now(), attempts = max_attempts - 1"))
    last = await claim(own_db)
    assert last is not None and last.attempts == last.max_attempts
    async with own_db.transaction() as s:  # a decision to retry cannot go past the job's attempts
        final = await JobQueue(s).fail(
            last.lease, ended(message="boom again"), RetryDecision(retry=True, delay=timedelta(seconds=1))
        )
    assert final.job.status is JobStatus.FAILED and final.job.error_message == "boom again"
    assert await _statuses(own_db, job.id) == [
        ("queued", 1),
        ("in_progress", 1),
        ("queued", 2),
        ("in_progress", 3),
        ("failed", 3),
    ]
    async with own_db.transaction() as s:
        outcomes = (
            await s.execute(text("SELECT attempt, status, error_type FROM training_events ORDER BY attempt"))
        ).all()
    assert [tuple(r) for r in outcomes] == [(1, "failed", "RuntimeError"), (3, "failed", "RuntimeError")]


async def test_cancel_a_waiting_job_at_once_and_a_running_one_through_its_worker(own_db: Database) -> None:
    waiting = await admit(own_db, "w")
    await admit(own_db, "r", priority=9)
    running = await claim(own_db)
    assert running is not None and running.dataset_id == "r"
    async with own_db.transaction() as s:
        q = JobQueue(s)
        cancelled = await q.cancel(waiting.job_id)
        asked = await q.cancel(running.id)
        assert await q.cancel(uuid.uuid4()) is None
    assert cancelled is not None and cancelled.job.status is JobStatus.CANCELLED
    assert asked is not None and asked.job.status is JobStatus.IN_PROGRESS and asked.job.cancel_requested
    async with own_db.transaction() as s:
        q = JobQueue(s)
        assert (await q.heartbeat(running.lease, lease_for=LEASE)).job.cancel_requested
        stopped = await q.finish_cancelled(running.lease, ended("Cancelled", "cancelled by request"))
    assert stopped.job.status is JobStatus.CANCELLED and stopped.job.model_version is None
    assert (await _statuses(own_db, waiting.job_id))[-1] == ("cancelled", 1)
    assert (await _statuses(own_db, running.id))[-1] == ("cancelled", 1)
    from fcl.storage.errors import JobStateConflict

    with pytest.raises(JobStateConflict, match="already cancelled"):
        async with own_db.transaction() as s:
            await JobQueue(s).cancel(running.id)


async def test_release_puts_a_job_back_without_counting_the_attempt(own_db: Database) -> None:
    await admit(own_db, "drain")
    job = await claim(own_db)
    assert job is not None
    async with own_db.transaction() as s:
        back = await JobQueue(s).release(job.lease, ended("Released", "worker shutting down"))
    assert back.job.status is JobStatus.QUEUED and back.job.attempts == 0 and back.job.lease_token is None
    assert back.merged_into is None
    again = await claim(own_db)
    assert again is not None and again.id == job.id and again.attempts == 1


async def test_a_job_going_back_merges_into_the_follow_up_already_waiting(own_db: Database) -> None:
    first = await admit(own_db, "ds", priority=8, event="e1")
    running = await claim(own_db)
    assert running is not None and running.id == first.job_id
    follow_up = await admit(own_db, "ds", priority=2, event="e2")  # one follow-up while one runs
    assert follow_up.job_id != first.job_id
    async with own_db.transaction() as s:
        released = await JobQueue(s).release(running.lease, ended("Released", "worker shutting down"))
    gone, into = released.job, released.merged_into
    assert gone.status is JobStatus.CANCELLED and gone.error_type == "Merged"
    assert into is not None and into.id == follow_up.job_id
    assert into.priority == 8 and set(into.trigger_event_ids) == {"e1", "e2"}
    assert (await _statuses(own_db, running.id))[-1] == ("cancelled", 1)


async def test_a_retriable_failure_merged_into_the_waiting_job_keeps_its_backoff_and_attempts(
    own_db: Database,
) -> None:
    """A store outage fails a training; its follow-up was already waiting. The merged job must
    wait out the backoff and count the attempt spent, or an outage turns into trainings back to
    back, each with fresh attempts."""
    from fcl.storage.retry import RetryDecision

    first = await admit(own_db, "outage", event="o1")
    running = await claim(own_db)
    assert running is not None and running.id == first.job_id
    follow_up = await admit(own_db, "outage", event="o2")
    async with own_db.transaction() as s:
        failed = await JobQueue(s).fail(
            running.lease,
            ended("StoreUnavailable", "the store is down"),
            RetryDecision(retry=True, delay=timedelta(minutes=5)),
        )
    into = failed.merged_into
    assert into is not None and into.id == follow_up.job_id
    assert into.attempts == 1 and into.trigger_count == 2
    assert into.run_after >= datetime.now(UTC) + timedelta(minutes=4)
    assert await claim(own_db) is None  # nothing to run until the backoff is over


async def test_a_job_carries_its_trigger_count_and_the_ends_of_its_trigger_list(own_db: Database) -> None:
    """200k repeated triggers must not make every read of the job 50 MB: a job's reads carry the
    count and the first and last 20 ids; the API pages the rest."""
    from fcl.storage.entities import TriggerRequest
    from fcl.storage.jobs import JobRepository

    ids = [f"t-{i:03d}" for i in range(75)]
    for chunk in (ids[:30], ids[30:]):  # joined in two batches, so the order spans commits
        async with own_db.transaction() as s:
            await JobQueue(s).admit(
                [TriggerRequest(event_id=e, dataset_id="busy", model_type="goal", priority=1) for e in chunk]
            )
    async with own_db.transaction() as s:
        job_id: uuid.UUID = (await s.execute(text("SELECT id FROM training_jobs"))).scalar_one()
        job = await JobRepository(s).get(job_id)
        assert job is not None
        assert job.trigger_count == 75
        assert list(job.trigger_event_ids) == ids[:20] + ids[-20:]
        pages, after = [], None
        while True:
            page = await JobRepository(s).triggers(job_id, limit=30, after=after)
            pages.append([t.event_id for t in page])
            if len(page) < 30:
                break
            after = (page[-1].received_at, page[-1].event_id)
    assert [len(p) for p in pages] == [30, 30, 15]
    assert [e for p in pages for e in p] == ids


@pytest.mark.parametrize("driver", ["session", "plain"])
async def test_admission_in_one_batch_follows_the_rules_in_order(own_db: Database, driver: str) -> None:
    """One batch holding a new pair twice, a repeat inside the batch, a repeat of an earlier
    batch and a trigger for a pair whose job runs: the same outcomes, in order, as one by one;
    the same in the ORM session (`JobQueue.admit`) and on a plain connection (`admit_on`, the
    streams worker's hot path), reasons and trace contexts included."""
    from fcl.contract.enums import AdmissionOutcome
    from fcl.storage.entities import AdmissionPolicy, TriggerRequest
    from fcl.storage.queue.admission import admit_on

    earlier = await admit(own_db, "old", priority=3, event="old-1")
    running = await admit(own_db, "busy", priority=9, event="busy-1")
    assert (await claim(own_db)) is not None  # busy runs now
    reason = {"kind": "threshold", "total_samples": 12}
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    batch = [
        TriggerRequest(
            event_id=e,
            dataset_id=d,
            model_type="goal",
            priority=p,
            reason=reason if e == "n2" else None,
            trace_context=trace if e == "b3" else None,
        )
        for e, d, p in [
            ("n1", "new", 2),
            ("n2", "new", 7),
            ("n1", "new", 9),
            ("old-1", "old", 5),
            ("o2", "old", 6),
            ("b2", "busy", 1),
            ("b3", "busy", 4),
        ]
    ]
    if driver == "session":
        async with own_db.transaction() as s:
            admissions = await JobQueue(s).admit(batch)
    else:
        async with own_db.plain_transaction() as conn:
            admissions = await admit_on(conn, batch, AdmissionPolicy())
    outcomes = [(a.request.event_id, a.outcome.value, a.priority) for a in admissions]
    assert outcomes == [
        ("n1", "created", 2),
        ("n2", "joined", 7),
        ("n1", "duplicate", 7),
        ("old-1", "duplicate", 3),
        ("o2", "joined", 6),
        ("b2", "created", 1),
        ("b3", "joined", 4),
    ]
    assert admissions[0].job_id == admissions[1].job_id == admissions[2].job_id
    assert admissions[3].job_id == admissions[4].job_id == earlier.job_id
    assert admissions[5].job_id == admissions[6].job_id != running.job_id
    async with own_db.transaction() as s:
        jobs = {
            (r.dataset_id, r.status): r
            for r in (
                await s.execute(
                    text(
                        "SELECT dataset_id, status, priority, reason, trace_context, "
                        "(SELECT count(*) FROM job_triggers t WHERE t.job_id = j.id) AS n "
                        "FROM training_jobs j"
                    )
                )
            ).all()
        }
    assert {k: (v.priority, v.n) for k, v in jobs.items()} == {
        ("new", "queued"): (7, 2),
        ("old", "queued"): (6, 2),
        ("busy", "in_progress"): (9, 1),
        ("busy", "queued"): (4, 2),
    }
    assert jobs[("new", "queued")].reason == reason and jobs[("busy", "queued")].trace_context == trace
    assert jobs[("old", "queued")].reason is None and jobs[("new", "queued")].trace_context is None
    created = [a for a in admissions if a.outcome is AdmissionOutcome.CREATED]
    for a in created:  # one queued event per job created, none for joins and repeats
        assert await _statuses(own_db, a.job_id) == [("queued", 1)]


async def test_two_batches_queueing_the_same_pair_at_once_make_one_job(own_db: Database) -> None:
    """A batch whose new job's insert meets another transaction's uncommitted one waits for it,
    then joins the job that transaction queued: one job, both triggers on it."""
    import asyncio

    from fcl.contract.enums import AdmissionOutcome
    from fcl.storage.entities import TriggerRequest

    def batch(*events: tuple[str, str, int]) -> list[TriggerRequest]:
        return [TriggerRequest(event_id=e, dataset_id=d, model_type="goal", priority=p) for e, d, p in events]

    async with own_db.transaction() as first:
        [a1] = await JobQueue(first).admit(batch(("r1", "raced", 3)))
        assert a1.outcome is AdmissionOutcome.CREATED

        async def second() -> list[Admission]:
            async with own_db.transaction() as s:
                return await JobQueue(s).admit(
                    batch(("r2", "raced", 8), ("r2", "raced", 1), ("r2", "other", 1), ("c1", "calm", 2))
                )

        later = asyncio.create_task(second())
        await asyncio.sleep(1.0)  # the second batch is now waiting on the first one's insert
        assert not later.done()
    admissions = await later
    assert [(a.request.event_id, a.outcome.value, a.priority) for a in admissions] == [
        ("r2", "joined", 8),
        ("r2", "duplicate", 8),
        ("r2", "created", 1),  # the same id for another dataset is another trigger
        ("c1", "created", 2),
    ]
    assert admissions[0].job_id == admissions[1].job_id == a1.job_id != admissions[2].job_id
    async with own_db.transaction() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT j.dataset_id, j.priority, array_agg(t.event_id ORDER BY t.event_id) AS events "
                    "FROM training_jobs j JOIN job_triggers t ON t.job_id = j.id GROUP BY j.id"
                )
            )
        ).all()
    assert sorted((r.dataset_id, r.priority, r.events) for r in rows) == [
        ("calm", 2, ["c1"]),
        ("other", 1, ["r2"]),
        ("raced", 8, ["r1", "r2"]),
    ]


async def test_a_released_job_completes_on_its_rerun_with_one_version_and_the_attempt_not_counted(
    own_db: Database,
) -> None:
    """A SIGTERM drain put the job back; its next run has the same attempt number and replaces the
    released attempt's row (once a ForeignKeyViolation that threw the trained model away)."""
    await admit(own_db, "rolling")
    job = await claim(own_db)
    assert job is not None and job.attempts == 1
    async with own_db.transaction() as s:
        await JobQueue(s).release(job.lease, ended("Released", "worker shutting down"))
    again = await claim(own_db)
    assert again is not None and again.id == job.id and again.attempts == 1
    async with own_db.transaction() as s:
        done = await JobQueue(s).complete(again.lease, await _completed(own_db, again))
    assert done.job.status is JobStatus.COMPLETED and done.model_version == 1 and done.job.attempts == 1
    async with own_db.transaction() as s:
        rows = (
            await s.execute(
                text("SELECT attempt, status, model_version FROM training_events WHERE job_id = :j"), {"j": job.id}
            )
        ).all()
        versions = await s.scalar(text("SELECT count(*) FROM model_versions WHERE job_id = :j"), {"j": job.id})
    assert [tuple(r) for r in rows] == [(1, "completed", 1)] and versions == 1


async def test_a_cancel_request_survives_a_release(own_db: Database) -> None:
    await admit(own_db, "cancel-then-drain")
    job = await claim(own_db)
    assert job is not None
    async with own_db.transaction() as s:
        await JobQueue(s).cancel(job.id)  # running: asks its worker to stop
    async with own_db.transaction() as s:
        back = await JobQueue(s).release(job.lease, ended("Released", "worker shutting down"))
    assert back.job.status is JobStatus.CANCELLED
    assert await claim(own_db) is None, "a job an operator cancelled must not run again"


async def test_a_training_that_ends_with_its_dataset_still_ready_queues_the_next_one(own_db: Database) -> None:
    """Samples that arrive during a training leave the counter above the threshold with no new
    crossing: the end of the training queues the next one (once per state of the dataset)."""
    dataset = "continuous"
    await factories.store(own_db, dataset, "goal", count=10, threshold=10)
    await admit(own_db, dataset)
    job = await claim(own_db)
    assert job is not None
    attempt = await _completed(own_db, job)  # stores one sample, watermark 1
    await factories.store(own_db, dataset, "goal", count=20, threshold=10)  # arrived during the training
    async with own_db.transaction() as s:
        done = await JobQueue(s).complete(job.lease, attempt)
    assert done.job.status is JobStatus.COMPLETED
    nxt = await claim(own_db)
    assert nxt is not None and nxt.dataset_id == dataset and nxt.id != job.id
    assert any(t.startswith("ready:") for t in nxt.trigger_event_ids)
    # A failed training of data that has not changed does not loop: the same state makes no job.
    async with own_db.transaction() as s:
        await JobQueue(s).fail(nxt.lease, ended(), RetryDecision(retry=False))
    assert await claim(own_db) is None
    # New samples: the periodic sweep (and the next training's end) queue it again.
    await factories.store(own_db, dataset, "goal", count=1, threshold=10)
    async with own_db.transaction() as s:
        swept = await JobQueue(s).admit_ready(priority=5)
        repeat = await JobQueue(s).admit_ready(priority=5)
    assert [a.outcome.value for a in swept] == ["created"] and repeat == []


async def test_a_committed_completion_is_found_by_its_lease_holder_and_attempt(own_db: Database) -> None:
    """What makes retrying the success transaction safe: after a commit whose answer was lost the
    lease is gone, and `completed_by` tells the worker its completion is the one recorded."""
    await admit(own_db, "lost-answer")
    job = await claim(own_db)
    assert job is not None and job.lease is not None
    async with own_db.transaction() as s:
        await JobQueue(s).complete(job.lease, await _completed(own_db, job))
    with pytest.raises(LeaseLost):
        async with own_db.transaction() as s:
            await JobQueue(s).complete(job.lease, await _completed(own_db, job))
    async with own_db.transaction() as s:
        mine = await JobQueue(s).completed_by(job.lease, 1)
        other = await JobQueue(s).completed_by(replace(job.lease, owner="someone-else"), 1)
        earlier = await JobQueue(s).completed_by(job.lease, 2)
    assert mine is not None and mine.job.status is JobStatus.COMPLETED and mine.model_version == 1
    assert other is None and earlier is None
    async with own_db.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM model_versions")) == 1
