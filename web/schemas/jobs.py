"""The jobs' views: a job, its timeline and triggers, admissions, workers, the training status and
the history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from fcl.contract.enums import AdmissionOutcome, JobStatus, TrainingEventStatus, VerdictKind
from fcl.contract.events import ErrorInfo
from fcl.storage.entities import (
    Job,
    TrainingEvent,
    WorkerHeartbeat,
)
from fcl.web.schemas.common import View


# -- views ------------------------------------------------------------------------------------------
class JobView(View):
    job_id: uuid.UUID
    dataset_id: str
    model_type: str
    status: JobStatus
    priority: int
    attempts: int
    max_attempts: int
    progress: float | None
    cancel_requested: bool
    worker: str | None = Field(description="the worker holding the job while it runs")
    error: ErrorInfo | None
    model_version: int | None = Field(description="the version this job recorded")
    trigger_event_ids: list[str] = Field(
        description="the first and last 20 ids of the events that asked for this job, in arrival order; "
        "`GET /training-job/{job_id}/triggers` pages them all"
    )
    trigger_count: int = Field(description="how many events asked for this job")
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reason: dict[str, Any] | None = Field(
        default=None,
        description="why the job was queued: `kind` (threshold, operator, live_drop, input_drift, champion_age) "
        "and the figures that made it",
    )

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            job_id=job.id,
            dataset_id=job.dataset_id,
            model_type=job.model_type,
            status=job.status,
            priority=job.priority,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            progress=job.progress,
            cancel_requested=job.cancel_requested,
            worker=job.lease_owner if job.status is JobStatus.IN_PROGRESS else None,
            error=ErrorInfo(type=job.error_type, message=job.error_message or "") if job.error_type else None,
            model_version=job.model_version,
            trigger_event_ids=list(job.trigger_event_ids),
            trigger_count=job.trigger_count,
            created_at=job.created_at,
            updated_at=job.updated_at,
            run_after=job.run_after,
            started_at=job.started_at,
            finished_at=job.finished_at,
            reason=job.reason,
        )


class TrainingEventView(View):
    training_event_id: uuid.UUID
    job_id: uuid.UUID
    attempt: int
    dataset_id: str
    model_type: str
    status: TrainingEventStatus
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    fit_seconds: float | None
    sample_count: int | None
    dataset_watermark: int | None
    metrics: dict[str, Any]
    error: ErrorInfo | None
    model_version: int | None
    validation_passed: bool | None
    promoted: bool | None = Field(description="whether this training's version was promoted when it was validated")
    verdict: VerdictKind | None = None
    verdict_message: str | None = None
    reason: dict[str, Any] | None = Field(
        default=None,
        description="why the job was queued: `kind` (threshold, operator, live_drop, input_drift, champion_age) "
        "and the figures that made it",
    )

    @classmethod
    def of(cls, e: TrainingEvent) -> TrainingEventView:
        return cls(
            training_event_id=e.id,
            job_id=e.job_id,
            attempt=e.attempt,
            dataset_id=e.dataset_id,
            model_type=e.model_type,
            status=e.status,
            worker=e.worker,
            started_at=e.started_at,
            finished_at=e.finished_at,
            duration_seconds=e.duration_seconds,
            fit_seconds=e.fit_seconds,
            sample_count=e.sample_count,
            dataset_watermark=e.dataset_watermark,
            metrics=e.metrics,
            error=ErrorInfo(type=e.error_type, message=e.error_message or "") if e.error_type else None,
            model_version=e.model_version,
            validation_passed=e.validation_passed,
            promoted=e.promoted,
            verdict=e.verdict,
            verdict_message=e.verdict_message,
            reason=e.reason,
        )


class TimelineEntry(View):
    at: datetime
    status: str
    message: str


class JobDetail(JobView):
    timeline: list[TimelineEntry]
    training_events: list[TrainingEventView] = Field(description="one per attempt that ended")

    @classmethod
    def of_job(cls, job: Job, events: list[TrainingEvent]) -> JobDetail:
        timeline = [TimelineEntry(at=job.created_at, status="queued", message=f"created with priority {job.priority}")]
        for e in events:
            timeline.append(
                TimelineEntry(
                    at=e.started_at,
                    status="in_progress",
                    message=f"attempt {e.attempt} started" + (f" on {e.worker}" if e.worker else ""),
                )
            )
            if e.finished_at is not None:
                if e.status is TrainingEventStatus.COMPLETED:
                    verdict = "promoted" if e.promoted else "not promoted"
                    message = f"attempt {e.attempt} completed: version {e.model_version}, {verdict}"
                else:
                    message = f"attempt {e.attempt} {e.status.value}" + (
                        f": {e.error_type}: {e.error_message}" if e.error_type else ""
                    )
                timeline.append(TimelineEntry(at=e.finished_at, status=e.status.value, message=message))
        if job.status is JobStatus.IN_PROGRESS and job.started_at is not None:
            timeline.append(
                TimelineEntry(
                    at=job.started_at,
                    status="in_progress",
                    message=f"attempt {job.attempts} running on {job.lease_owner}",
                )
            )
        elif job.status.is_final and job.finished_at is not None:
            timeline.append(
                TimelineEntry(
                    at=job.finished_at, status=job.status.value, message=job.error_message or job.status.value
                )
            )
        timeline.sort(key=lambda t: t.at)
        base = JobView.of(job).model_dump()
        return cls(**base, timeline=timeline, training_events=[TrainingEventView.of(e) for e in events])


class TriggerResponse(View):
    outcome: AdmissionOutcome = Field(
        description="created: a new waiting job; joined: the job already waiting for this dataset; "
        "duplicate: this Idempotency-Key was used before"
    )
    trigger_event_id: str
    job: JobView


class Admitted(View):
    dataset_id: str
    model_type: str
    job_id: uuid.UUID
    outcome: AdmissionOutcome


class AutoTriggerResponse(View):
    admitted: list[Admitted]


class WorkerView(View):
    worker_id: str
    hostname: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    running_jobs: list[str]

    @classmethod
    def of(cls, w: WorkerHeartbeat) -> WorkerView:
        return cls(
            worker_id=w.worker_id,
            hostname=w.hostname,
            pid=w.pid,
            started_at=w.started_at,
            last_seen_at=w.last_seen_at,
            running_jobs=[str(j) for j in w.info.get("running_jobs", [])],
        )


class ModelTypeStatus(View):
    champion_version: int | None
    champion_since: datetime | None
    key_metric: str
    higher_is_better: bool
    last_run: TrainingEventView | None


class TrainingStatus(View):
    queue: dict[str, int] = Field(description="jobs per status")
    waiting: list[JobView] = Field(description="the first waiting jobs, in claim order")
    running: list[JobView]
    workers: list[WorkerView] = Field(description="trainer workers seen in the last three heartbeats")
    model_types: dict[str, ModelTypeStatus]
    generated_at: datetime


class TriggerView(View):
    event_id: str
    priority: int
    source: str = Field(description="where the trigger came from: kafka, http, retrain-sweep, …")
    received_at: datetime


class TriggerPage(View):
    items: list[TriggerView] = Field(description="in the order they arrived")
    next_after: str | None = Field(description="pass as `after` for the next page; null at the end")


class HistoryPage(View):
    items: list[TrainingEventView]
    next_before: str | None = Field(description="pass as `before` for the next (older) page; null at the end")
