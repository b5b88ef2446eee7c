"""A job's completion as the server-side function `fcl_complete_job` (migration 0025) takes it:
one JSON document (`completion_document`) in, one row out (`COMPLETE_SQL`: the completed job with
its trigger ids, the attempt's id, the version number, the events queued, and whether the dataset
is ready for its next job), made into a `Transition` by `completion`. `JobQueue.complete` runs it
inside a transaction; `WorkerStore.complete` runs it as a statement of its own: one round trip."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from fcl.contract import limits
from fcl.contract.enums import JobStatus
from fcl.contract.events import TrainingValidationEvent, rfc3339
from fcl.contract.topics import Topic
from fcl.storage.entities import CompletedAttempt, Job, Lease, Transition
from fcl.storage.queue.statements import JOB

COMPLETE_SQL = f"""
    SELECT {JOB}, c.attempt_id, c.new_version, c.queued_events, c.ready
    FROM fcl_complete_job(CAST(:p AS jsonb)) AS c CROSS JOIN LATERAL (SELECT (c.job).*) AS j
"""


def job_of(row: Mapping[Any, Any]) -> Job:
    """A job from a row with its columns, from the session or from asyncpg as is (jsonb as text)."""
    values = dict(row)
    if isinstance(values.get("reason"), str):
        values["reason"] = json.loads(values["reason"])
    return Job.from_mapping(values)


def completion(row: Mapping[Any, Any], attempt: CompletedAttempt) -> Transition:
    """The transition a row of COMPLETE_SQL records."""
    values = dict(row)
    return Transition(
        job=job_of(values),
        before=JobStatus.IN_PROGRESS,
        training_event_id=values["attempt_id"],
        model_version=values["new_version"],
        promoted=attempt.candidate.promoted,
        events=values["queued_events"],
    )


def completion_document(lease: Lease, attempt: CompletedAttempt) -> dict[str, Any]:
    """What `fcl_complete_job` (migration 0025) writes, as one JSON document: the lease, the
    attempt's row, the version's fields, its checks, and the `training-validation` event without
    what only the function knows (the attempt's id, the version number, the baseline)."""
    candidate = attempt.candidate
    if candidate.promoted:
        verdict = "promoted to champion"
    else:
        verdict = f"not promoted ({candidate.verdict.value}): {candidate.verdict_message or 'checks failed'}"
    validation = TrainingValidationEvent(
        event_id=str(uuid.uuid4()),
        job_id=str(lease.job_id),
        training_event_id="",  # the function's
        model_type="",  # the job's
        candidate_version=0,  # the function's
        baseline_version=None,  # the function's
        metrics=candidate.metrics,
        baseline_metrics=candidate.baseline_metrics,
        checks=list(candidate.checks),
        passed=candidate.passed,
        promoted=candidate.promoted,
        occurred_at=rfc3339(),
        verdict=candidate.verdict,
        message=candidate.verdict_message,
        drift=candidate.drift,
    ).model_dump(mode="json")
    for filled_in in ("training_event_id", "model_type", "candidate_version", "baseline_version"):
        del validation[filled_in]
    return {
        "job_id": str(lease.job_id),
        "token": str(lease.token),
        "owner": lease.owner,
        "validated_against": attempt.validated_against,
        "promote": candidate.promoted,
        "actor": f"job {lease.job_id} on {lease.owner}"[: limits.MAX_ID_CHARS],
        "verdict": verdict,
        "attempt": {
            "started_at": attempt.started_at.isoformat(),
            "duration_seconds": attempt.duration_seconds,
            "fit_seconds": candidate.fit_seconds,
            "sample_count": candidate.sample_count,
            "dataset_watermark": attempt.dataset_watermark,
            "metrics": candidate.metrics,
            "validation_passed": candidate.passed,
            "promoted": candidate.promoted,
            "verdict": candidate.verdict.value,
            "verdict_message": candidate.verdict_message[: limits.MAX_MESSAGE_CHARS]
            if candidate.verdict_message
            else None,
            "drift": candidate.drift.model_dump(mode="json") if candidate.drift else None,
        },
        "version": {
            "artifact_path": candidate.artifact.path,
            "artifact_sha256": candidate.artifact.sha256,
            "artifact_size": candidate.artifact.size,
            "artifact_format": candidate.artifact.format,
            "metrics": candidate.metrics,
            "hyperparameters": candidate.hyperparameters,
            "dataset_watermark": attempt.dataset_watermark,
            "dataset_hash": candidate.dataset_hash,
            "seed": candidate.seed,
            "library_versions": candidate.library_versions,
            "code_version": candidate.code_version,
            "info": candidate.info,
            "profile": candidate.profile,
        },
        "checks": [c.model_dump(mode="json") for c in candidate.checks],
        "validation": validation,
        "status_topic": Topic.TRAINING_STATUS.value,
        "validation_topic": Topic.TRAINING_VALIDATION.value,
        "versions_topic": Topic.MODEL_VERSIONS.value,
    }
