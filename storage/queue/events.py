"""The `training-status` event of a transition, built here and nowhere else: in Python
(`status_event`, an outbox row) and, for the statements that make many at once (admission, the
claim), in SQL (`status_event_sql`); tests/integration/test_reads.py checks the two are equal."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from fcl.contract.enums import JobStatus
from fcl.contract.events import ErrorInfo, TrainingStatusEvent, rfc3339
from fcl.contract.topics import Topic
from fcl.storage.entities import (
    Job,
)
from fcl.storage.outbox import OutboxEntry
from fcl.storage.reads import ts


class JobFields(Protocol):
    """What a status event says of its job."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def dataset_id(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def reason(self) -> dict[str, Any] | None: ...


def status_event_sql(rows: str, *, status: str, attempt: str, progress: str, message: str) -> str:
    """An INSERT of the `training-status` event of each job in `rows` (a CTE of training_jobs rows,
    read as `c`) into the outbox, as `status_event` builds it (tests/integration/test_reads.py
    checks they are equal); `:status_topic` is its topic. The SQL expressions give the event's
    status, attempt, progress and message."""
    return f"""
        INSERT INTO outbox (event_id, topic, key, payload)
        SELECT c.event_id, CAST(:status_topic AS text), c.id::text, jsonb_build_object(
                   'event_id', c.event_id, 'job_id', c.id, 'dataset_id', c.dataset_id, 'model_type', c.model_type,
                   'status', {status}, 'priority', c.priority, 'attempt', GREATEST(1, {attempt}),
                   'progress', {progress}, 'message', {message}, 'error', NULL, 'training_event_id', NULL,
                   'model_version', NULL, 'occurred_at', {ts("clock_timestamp()")}, 'reason', c.reason)
        FROM (SELECT *, gen_random_uuid() AS event_id FROM {rows}) AS c
        ORDER BY c.id
        RETURNING event_id"""


def status_event(
    job: JobFields,
    status: JobStatus,
    *,
    attempt: int | None = None,
    message: str = "",
    progress: float | None = None,
    error: tuple[str, str] | None = None,
    training_event_id: uuid.UUID | None = None,
    model_version: int | None = None,
) -> OutboxEntry:
    """THE `training-status` event of a transition, as an outbox row. `attempt` defaults to the
    job's attempts (at least 1)."""
    event = TrainingStatusEvent(
        event_id=str(uuid.uuid4()),
        job_id=str(job.id),
        dataset_id=job.dataset_id,
        model_type=job.model_type,
        status=status,
        priority=job.priority,
        attempt=max(1, attempt if attempt is not None else job.attempts),
        progress=progress,
        message=message,
        error=ErrorInfo(type=error[0], message=error[1]) if error else None,
        training_event_id=str(training_event_id) if training_event_id else None,
        model_version=model_version,
        occurred_at=rfc3339(),
        reason=job.reason,
    )
    return (Topic.TRAINING_STATUS, str(job.id), event.model_dump(mode="json"))


def back_in_queue(job: Job, merged: Job | None, message: str, error: tuple[str, str] | None) -> OutboxEntry:
    """The event of a job that left `in_progress` without a result: queued again (with the next
    attempt's number), merged into the waiting job (cancelled), or failed for good."""
    if merged is not None:
        return status_event(job, JobStatus.CANCELLED, message=f"merged into waiting job {merged.id}", error=error)
    if job.status is JobStatus.QUEUED:
        return status_event(job, JobStatus.QUEUED, attempt=job.attempts + 1, message=message, error=error)
    return status_event(job, job.status, message=message, error=error)
