"""Rows of the queue that are read, not transitioned: jobs, their attempts (`training_events`) and
the trainer workers' heartbeats. Every transition of a job is `storage.queue`'s; these readers
serve the API, the worker's heartbeat and the retraining checks, inside the caller's transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract import limits
from fcl.contract.enums import TrainingEventStatus, VerdictKind
from fcl.storage.entities import (
    Job,
    JobTrigger,
    Lease,
    QueueFigure,
    TrainingEvent,
    TrainingFigure,
)
from fcl.storage.errors import JobStateConflict
from fcl.storage.models import (
    JobTriggerRow,
    TrainingEventRow,
    TrainingJobRow,
    WorkerHeartbeatRow,
)
from fcl.storage.reads import trigger_ids


class JobRepository:
    """Reads of jobs (their changes are `storage.queue`'s)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def triggers_under(self, prefix: str) -> list[str]:
        """The ids of the triggers that are `prefix` or start with `prefix` + '#' (the event ids an
        HTTP Idempotency-Key made), after locking `prefix` for this transaction so that two
        requests with one key are judged one after the other."""
        await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"fcl-key:{prefix}"})
        rows = await self.session.scalars(
            text("""
            SELECT event_id FROM job_triggers
            WHERE event_id = :prefix OR left(event_id, length(:prefix) + 1) = :prefix || '#'
        """),
            {"prefix": prefix},
        )
        return list(rows)

    async def get(self, job_id: uuid.UUID) -> Job | None:
        row = await self.session.get(TrainingJobRow, job_id, populate_existing=True)
        if row is None:
            return None
        triggers = await self.session.scalar(
            text(f"SELECT {trigger_ids('j')} FROM training_jobs j WHERE j.id = :id"), {"id": job_id}
        )
        return row.to_entity(tuple(triggers or ()))

    async def triggers(
        self, job_id: uuid.UUID, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[JobTrigger]:
        """A page of the job's triggers in the order they arrived, after the cursor `after`
        (received_at, event_id of the last one of the previous page)."""
        query = (
            select(JobTriggerRow)
            .where(JobTriggerRow.job_id == job_id)
            .order_by(JobTriggerRow.received_at, JobTriggerRow.event_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(JobTriggerRow.received_at, JobTriggerRow.event_id) > tuple_(*after))
        return [
            JobTrigger(event_id=r.event_id, priority=r.priority, source=r.source, received_at=r.received_at)
            for r in (await self.session.scalars(query)).all()
        ]

    async def figures(self) -> tuple[list[QueueFigure], list[TrainingFigure]]:
        """For /metrics: jobs per model type and status (maintained counters, migration 0019) with
        the age of the oldest waiting and running job (the finished ones have none), and training
        attempts per model type and outcome with their total seconds (maintained totals)."""
        queue = [
            QueueFigure(
                model_type=r.model_type,
                status=r.status,
                jobs=int(r.jobs),
                oldest_age_seconds=float(r.oldest) if r.oldest is not None else None,
            )
            for r in (
                await self.session.execute(
                    text("""
                    SELECT c.model_type, c.status, c.jobs, extract(epoch FROM now() - o.since) AS oldest
                    FROM (SELECT model_type, status, sum(jobs) AS jobs FROM job_type_counts
                          GROUP BY model_type, status HAVING sum(jobs) > 0) c
                    LEFT JOIN (SELECT model_type, 'queued' AS status, min(created_at) AS since FROM training_jobs
                               WHERE status = 'queued' GROUP BY model_type
                               UNION ALL
                               SELECT model_type, 'in_progress', min(started_at) FROM training_jobs
                               WHERE status = 'in_progress' GROUP BY model_type) o
                           ON o.model_type = c.model_type AND o.status = c.status
                    ORDER BY c.model_type, c.status
                 """)
                )
            ).all()
        ]
        training = [
            TrainingFigure(
                model_type=r.model_type,
                outcome=r.status,
                attempts=int(r.attempts),
                seconds_total=float(r.seconds or 0.0),
            )
            for r in (
                await self.session.execute(
                    text("""
                        SELECT model_type, status, sum(attempts) AS attempts, sum(seconds) AS seconds
                        FROM attempt_totals GROUP BY model_type, status HAVING sum(attempts) > 0
                        ORDER BY model_type, status
                    """)
                )
            ).all()
        ]
        return queue, training


class TrainingEventRepository:
    """Reads of the training history: one row per attempt that ended (written by storage.queue)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_id: uuid.UUID) -> TrainingEvent | None:
        row = await self.session.get(TrainingEventRow, event_id)
        return row.to_entity() if row else None

    async def for_job(self, job_id: uuid.UUID) -> list[TrainingEvent]:
        rows = (
            await self.session.scalars(
                select(TrainingEventRow).where(TrainingEventRow.job_id == job_id).order_by(TrainingEventRow.attempt)
            )
        ).all()
        return [r.to_entity() for r in rows]


class WorkerRepository:
    """Trainer workers announce themselves; `/training-status` lists them."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def beat(
        self, *, worker_id: str, hostname: str, pid: int, current_job_ids: Sequence[uuid.UUID], info: dict[str, Any]
    ) -> None:
        current = current_job_ids[0] if current_job_ids else None
        info = {**info, "running_jobs": [str(j) for j in current_job_ids]}
        stmt = insert(WorkerHeartbeatRow).values(
            worker_id=worker_id, hostname=hostname, pid=pid, current_job_id=current, info=info
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["worker_id"],
                set_={"last_seen_at": func.now(), "current_job_id": current, "info": info, "pid": pid},
            )
        )

    async def remove(self, worker_id: str) -> None:
        await self.session.execute(delete(WorkerHeartbeatRow).where(WorkerHeartbeatRow.worker_id == worker_id))


async def record_attempt(
    session: AsyncSession,
    job: Job,
    lease: Lease | None,
    status: TrainingEventStatus,
    *,
    started_at: Any,
    duration: float,
    error: tuple[str, str] | None = None,
    fit_seconds: float | None = None,
    sample_count: int | None = None,
    watermark: int | None = None,
    metrics: Mapping[str, float] | None = None,
    model_version: int | None = None,
    validation_passed: bool | None = None,
    promoted: bool | None = None,
    verdict: VerdictKind | None = None,
    verdict_message: str | None = None,
    drift: Mapping[str, Any] | None = None,
    attempt: int | None = None,
    worker: str | None = None,
) -> uuid.UUID:
    """The `training_events` row of the attempt that ended (one per job and attempt number):
    an attempt released by a draining worker does not count, so the attempt that re-runs
    under its number replaces its row, and the id returned is the row's."""
    event_id = uuid.uuid4()
    stored = await session.scalar(
        text("""
        INSERT INTO training_events (id, job_id, attempt, dataset_id, model_type, status, worker, started_at,
                                     finished_at, duration_seconds, fit_seconds, sample_count, dataset_watermark,
                                     metrics, error_type, error_message, model_version, validation_passed, promoted,
                                     verdict, verdict_message, drift, reason)
        VALUES (:id, :job_id, :attempt, :dataset_id, :model_type, :status, :worker, :started_at, now(), :duration,
                :fit_seconds, :sample_count, :watermark, CAST(:metrics AS jsonb), :error_type, :error_message,
                :model_version, :validation_passed, :promoted, :verdict, :verdict_message, CAST(:drift AS jsonb),
                CAST(:reason AS jsonb))
        ON CONFLICT (job_id, attempt) DO UPDATE
        SET status = EXCLUDED.status, worker = EXCLUDED.worker, started_at = EXCLUDED.started_at,
            finished_at = EXCLUDED.finished_at, duration_seconds = EXCLUDED.duration_seconds,
            fit_seconds = EXCLUDED.fit_seconds, sample_count = EXCLUDED.sample_count,
            dataset_watermark = EXCLUDED.dataset_watermark, metrics = EXCLUDED.metrics,
            error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
            model_version = EXCLUDED.model_version, validation_passed = EXCLUDED.validation_passed,
            promoted = EXCLUDED.promoted, verdict = EXCLUDED.verdict, verdict_message = EXCLUDED.verdict_message,
            drift = EXCLUDED.drift
        WHERE training_events.status = 'abandoned'
        RETURNING id
    """),
        {
            "id": event_id,
            "job_id": job.id,
            "attempt": attempt if attempt is not None else job.attempts,
            "dataset_id": job.dataset_id,
            "model_type": job.model_type,
            "status": status.value,
            "worker": worker or (lease.owner if lease else None),
            "started_at": started_at,
            "duration": duration,
            "fit_seconds": fit_seconds,
            "sample_count": sample_count,
            "watermark": watermark,
            "metrics": json.dumps(dict(metrics or {})),
            "reason": json.dumps(job.reason) if job.reason is not None else None,
            "error_type": error[0] if error else None,
            "error_message": (error[1][: limits.MAX_MESSAGE_CHARS] or None) if error else None,
            "model_version": model_version,
            "validation_passed": validation_passed,
            "promoted": promoted,
            "verdict": verdict.value if verdict else None,
            "verdict_message": verdict_message[: limits.MAX_MESSAGE_CHARS] if verdict_message else None,
            "drift": json.dumps(dict(drift)) if drift is not None else None,
        },
    )
    if stored is None:
        raise JobStateConflict(f"attempt {job.attempts} of job {job.id} already has a recorded outcome")
    return uuid.UUID(str(stored))
