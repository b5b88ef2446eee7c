"""The row-level statements the transitions are made of: a job locked for the transaction (with
or without its lease), finished, or put back in the queue (merged into the job that waits for the
same dataset and model type, when one does). Each works inside the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract.enums import JobStatus
from fcl.storage.entities import Job, Lease
from fcl.storage.errors import LeaseLost
from fcl.storage.queue.statements import JOB


async def locked(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    row = (
        (await session.execute(text(f"SELECT {JOB} FROM training_jobs j WHERE j.id = :id FOR UPDATE"), {"id": job_id}))
        .mappings()
        .first()
    )
    return Job.from_mapping(row) if row else None


async def leased(session: AsyncSession, lease: Lease) -> Job:
    """The job, locked for this transaction, only while `lease` still holds it."""
    row = (
        (
            await session.execute(
                text(f"""
        SELECT {JOB} FROM training_jobs j
        WHERE j.id = :id AND j.lease_token = :token AND j.status = 'in_progress'
        FOR UPDATE
    """),
                {"id": lease.job_id, "token": lease.token},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise LeaseLost(f"the lease of job {lease.job_id} is not held by {lease.owner}")
    return Job.from_mapping(row)


async def finish(session: AsyncSession, job: Job, status: JobStatus, *, error: tuple[str, str] | None) -> Job:
    row = (
        (
            await session.execute(
                text(f"""
        UPDATE training_jobs AS j
        SET status = :status, finished_at = now(), updated_at = now(), lease_token = NULL, lease_expires_at = NULL,
            error_type = coalesce(:error_type, j.error_type),
            error_message = coalesce(:error_message, j.error_message)
        WHERE j.id = :id
        RETURNING {JOB}
    """),
                {
                    "id": job.id,
                    "status": status.value,
                    "error_type": error[0] if error else None,
                    "error_message": error[1] if error else None,
                },
            )
        )
        .mappings()
        .one()
    )
    return Job.from_mapping(row)


async def requeue(
    session: AsyncSession, job: Job, *, delay: timedelta, attempts: int, error: tuple[str, str] | None
) -> tuple[Job, Job | None]:
    """Back to the queue after `delay` with `attempts` counted, or merged into the job already
    waiting for the same dataset and model type (the returned pair's second). A job an
    operator asked to cancel is cancelled instead: the request survives a release or a retry."""
    if job.cancel_requested:
        return await finish(session, job, JobStatus.CANCELLED, error=error), None
    waiting = (
        await session.execute(
            text("""
        SELECT id FROM training_jobs WHERE dedupe_key = :key AND status = 'queued' AND id <> :id FOR UPDATE
    """),
            {"key": f"{job.dataset_id}/{job.model_type}", "id": job.id},
        )
    ).scalar()
    common = """lease_token = NULL, lease_expires_at = NULL, lease_owner = NULL, attempts = :attempts,
                updated_at = now(), progress = NULL"""
    params = {
        "id": job.id,
        "attempts": attempts,
        "delay": delay,
        "error_type": error[0] if error else None,
        "error_message": error[1] if error else None,
    }
    if waiting is None:
        row = (
            (
                await session.execute(
                    text(f"""
            UPDATE training_jobs AS j
            SET status = 'queued', run_after = now() + :delay, {common},
                error_type = coalesce(:error_type, j.error_type),
                error_message = coalesce(:error_message, j.error_message)
            WHERE j.id = :id
            RETURNING {JOB}
        """),
                    params,
                )
            )
            .mappings()
            .one()
        )
        return Job.from_mapping(row), None
    # Merge into the waiting job: it inherits the triggers, the higher priority, and the attempts
    # spent and the backoff of the job that failed (a store outage must not turn into trainings
    # back to back, each with a fresh count of attempts).
    await session.execute(
        text("UPDATE job_triggers SET job_id = :into WHERE job_id = :id"), {"into": waiting, "id": job.id}
    )
    merged = (
        (
            await session.execute(
                text(f"""
        UPDATE training_jobs AS j
        SET priority = GREATEST(j.priority, :priority), rank_at = LEAST(j.rank_at, :rank_at), updated_at = now(),
            trigger_count = j.trigger_count + :triggers, attempts = GREATEST(j.attempts, :attempts),
            run_after = GREATEST(j.run_after, now() + :delay)
        WHERE j.id = :into
        RETURNING {JOB}
    """),
                {
                    "into": waiting,
                    "priority": job.priority,
                    "rank_at": job.rank_at,
                    "triggers": job.trigger_count,
                    "attempts": attempts,
                    "delay": delay,
                },
            )
        )
        .mappings()
        .one()
    )
    into = Job.from_mapping(merged)
    row = (
        (
            await session.execute(
                text(f"""
        UPDATE training_jobs AS j
        SET status = 'cancelled', finished_at = now(), {common},
            error_type = 'Merged', error_message = :merged
        WHERE j.id = :id
        RETURNING {JOB}
    """),
                {**params, "merged": f"merged into waiting job {waiting}"},
            )
        )
        .mappings()
        .one()
    )
    return Job.from_mapping(row), into
