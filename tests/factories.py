"""State for tests, made the way the service makes it: samples through `SampleRepository.ingest`,
jobs through `storage.queue` (admit, complete, fail). Where a test needs a job in a state no
public path reaches directly (leased to a named worker, a training event with a chosen start),
one plain SQL statement here puts it there."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from fcl.contract.enums import CheckKind, Direction
from fcl.contract.events import Drift, ValidationCheck
from fcl.storage.datasets import SampleRepository
from fcl.storage.db import Database
from fcl.storage.entities import (
    Admission,
    Candidate,
    CompletedAttempt,
    EndedAttempt,
    Job,
    NewSampleBatch,
    StoredArtifactRef,
    Transition,
    TriggerRequest,
)
from fcl.storage.jobs import JobRepository
from fcl.storage.queue import JobQueue
from fcl.storage.registry import ChampionRepository
from fcl.storage.retry import RetryDecision

SAMPLE: dict[str, dict[str, Any]] = {
    "recommendation": {
        "user_id": "u",
        "episode_id": "e",
        "t": 0,
        "state": [0.0],
        "action": 0,
        "reward": 1.0,
        "next_state": [0.0],
        "done": True,
        "behavior_prob": 0.5,
    },
    "segmentation": {"user_id": "u", "features": {"x": 1.0}},
    "spending": {"user_id": "u", "date": "2026-01-01", "amount": 1.0},
    "goal": {"user_id": "u", "goal_id": "g", "features": {"x": 1.0}, "achieved": True},
}


async def store(
    db: Database,
    dataset_id: str,
    model_type: str,
    samples: Sequence[dict[str, Any]] | None = None,
    *,
    count: int = 1,
    threshold: int = 10**9,
) -> None:
    """Store samples (or `count` copies of a sample of the model type's shape) as one event."""
    batch = list(samples) if samples is not None else [dict(SAMPLE[model_type], user_id=f"u{i}") for i in range(count)]
    async with db.transaction() as s:
        await SampleRepository(s).ingest(
            [
                NewSampleBatch(
                    event_id=str(uuid.uuid4()),
                    dataset_id=dataset_id,
                    model_type=model_type,
                    samples=batch,
                    occurred_at=None,
                )
            ],
            thresholds={model_type: threshold},
        )


async def admit(
    db: Database,
    dataset_id: str,
    model_type: str = "goal",
    priority: int = 5,
    event_id: str | None = None,
    *,
    ageing: timedelta = timedelta(minutes=10),
) -> Admission:
    from fcl.storage.entities import AdmissionPolicy

    async with db.transaction() as s:
        [admission] = await JobQueue(s, AdmissionPolicy(ageing_step=ageing)).admit(
            [
                TriggerRequest(
                    event_id=event_id or str(uuid.uuid4()),
                    dataset_id=dataset_id,
                    model_type=model_type,
                    priority=priority,
                )
            ]
        )
    return admission


async def claim(
    db: Database, worker: str = "w1", *, lease: timedelta = timedelta(minutes=5), caps: dict[str, int] | None = None
) -> Job | None:
    async with db.transaction() as s:
        claimed = await JobQueue(s).claim(worker=worker, lease=lease, caps=caps)
    return claimed.job if claimed else None


async def lease(db: Database, job_id: uuid.UUID, worker: str = "test-worker") -> Job:
    """Put a waiting job in progress, leased to `worker` (what a claim does, for one chosen job)."""
    async with db.transaction() as s:
        await s.execute(
            text("""
            UPDATE training_jobs SET status = 'in_progress', attempts = attempts + 1, lease_owner = :worker,
                   lease_token = gen_random_uuid(), lease_expires_at = now() + interval '5 minutes',
                   started_at = now(), progress = 0
            WHERE id = :id AND status = 'queued'"""),
            {"id": job_id, "worker": worker},
        )
        job = await JobRepository(s).get(job_id)
    assert job is not None and job.lease_token is not None, f"job {job_id} was not waiting"
    return job


def check(metric: str, value: float, threshold: float, passed: bool) -> ValidationCheck:
    return ValidationCheck(
        metric=metric,
        kind=CheckKind.VALUE,
        value=value,
        baseline=None,
        threshold=threshold,
        direction=Direction.HIGHER_IS_BETTER,
        passed=passed,
    )


async def record_version(
    db: Database,
    model_type: str = "goal",
    *,
    passed: bool = True,
    auc: float = 0.8,
    artifact_path: str | None = None,
    sha256: str = "ab" * 32,
    size: int = 10,
    dataset_id: str | None = None,
    drift: Drift | None = None,
) -> Transition:
    """A trained, validated candidate recorded as a worker records it (`JobQueue.complete`): its
    version, its one check, its manifest info and data profile, and the champion move when it
    passed."""
    dataset_id = dataset_id or f"ds-{model_type}-{uuid.uuid4().hex[:6]}"
    await store(db, dataset_id, model_type)
    job = await lease(db, (await admit(db, dataset_id, model_type)).job_id)
    async with db.transaction() as s:
        current = await ChampionRepository(s).current(model_type)
        return await JobQueue(s).complete(
            job.lease,
            CompletedAttempt(
                started_at=datetime.now(UTC),
                duration_seconds=1.0,
                dataset_watermark=1,
                validated_against=current.seq if current else 0,
                candidate=Candidate(
                    fit_seconds=0.5,
                    sample_count=1,
                    metrics={"roc_auc": auc, "brier": 0.1},
                    baseline_metrics=None,
                    checks=(check("roc_auc", auc, 0.6, passed),),
                    passed=passed,
                    hyperparameters={"n": 1},
                    dataset_hash="h",
                    seed=1,
                    library_versions={"x": "1"},
                    code_version="c",
                    artifact=StoredArtifactRef(
                        path=artifact_path or f"/a/{uuid.uuid4()}", sha256=sha256, size=size, format="skops"
                    ),
                    info={"family": "random_forest", "cv_roc_auc": {"random_forest": auc}, "train_size": 1},
                    profile={"features": {"x": {"edges": [0.0], "shares": [0.0, 1.0], "count": 1, "mean": 1.0}}},
                    drift=drift,
                ),
            ),
        )


async def failed_attempt(
    db: Database,
    dataset_id: str,
    model_type: str = "goal",
    *,
    error_type: str = "InvalidDataError",
    started_at: datetime | None = None,
) -> Transition:
    """A job whose one attempt failed for good."""
    await store(db, dataset_id, model_type)
    job = await lease(db, (await admit(db, dataset_id, model_type)).job_id)
    async with db.transaction() as s:
        return await JobQueue(s).fail(
            job.lease,
            EndedAttempt(
                started_at=started_at or datetime.now(UTC),
                duration_seconds=1.0,
                error_type=error_type,
                message="refused",
            ),
            RetryDecision(retry=False, reason="not retriable"),
        )
