"""`JobQueue`: every transition of a job, inside the caller's transaction. See `storage.queue`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract import limits
from fcl.contract.enums import JobStatus, TrainingEventStatus
from fcl.storage.entities import (
    Admission,
    AdmissionPolicy,
    CompletedAttempt,
    EndedAttempt,
    Job,
    Lease,
    Transition,
    TriggerRequest,
)
from fcl.storage.errors import JobStateConflict, LeaseLost, wrap
from fcl.storage.jobs import record_attempt
from fcl.storage.outbox import OutboxEntry, OutboxRepository
from fcl.storage.queue import rows
from fcl.storage.queue.admission import AdmitRow, admission_outcomes, admission_params, raced_requests
from fcl.storage.queue.completion import COMPLETE_SQL, completion, completion_document
from fcl.storage.queue.events import back_in_queue, status_event
from fcl.storage.queue.statements import ADMIT_SQL, CLAIM_SQL, JOB, claim_params
from fcl.storage.retry import RetryDecision

ADMIT = text(ADMIT_SQL)  # parsed once
COMPLETE = text(COMPLETE_SQL)
CLAIM = text(CLAIM_SQL)


class JobQueue:
    """The transitions, inside the caller's transaction (`Database.transaction()`)."""

    def __init__(self, session: AsyncSession, policy: AdmissionPolicy | None = None) -> None:
        self.session = session
        self.policy = policy or AdmissionPolicy()

    # -- admission ---------------------------------------------------------------------------------
    async def admit(self, requests: Sequence[TriggerRequest]) -> list[Admission]:
        """Admit triggers in order by the contract's rules: the same event id twice for the same
        dataset and model type makes one job (`duplicate`; an id is scoped by its pair, so no
        producer's id can pre-empt another dataset's trigger); a trigger for a dataset and model
        type with a waiting job joins it (its priority becomes the higher of the two, `joined`);
        otherwise a new waiting job is queued (`created`; the follow-up when one runs) with its
        `queued` event. One statement (`ADMIT_SQL`) for the whole batch, whatever its size,
        events included; `storage.queue.admission.admit_on` is the same on a plain connection."""
        if not requests:
            return []
        result = await self.session.execute(ADMIT, admission_params(requests, self.policy))
        rows = [AdmitRow(**r) for r in result.mappings().all()]
        raced = raced_requests(requests, rows)
        again = dict(zip(raced, await self.admit([requests[i] for i in raced]), strict=True)) if raced else {}
        return admission_outcomes(requests, rows, again)

    async def admit_ready(
        self, *, priority: int, dataset_id: str | None = None, source: str = "retrain"
    ) -> list[Admission]:
        """Retraining that never stalls: a job for each dataset (or just `dataset_id`) whose counter
        is at or above its threshold and that has no job waiting or running, by the admission
        rules. The trigger id is `ready:<dataset>:<total samples>`, so each state of a dataset
        makes at most one such job: a training that failed on data that has not changed since is
        not tried again until new samples arrive, and concurrent sweeps make one job."""
        rows = (
            await self.session.execute(
                text("""
            SELECT d.dataset_id, d.model_type, d.total_samples FROM datasets d
            WHERE d.samples_since_training >= d.threshold
              AND (CAST(:dataset_id AS text) IS NULL OR d.dataset_id = :dataset_id)
              AND NOT EXISTS (
                  SELECT 1 FROM training_jobs j
                  WHERE j.dataset_id = d.dataset_id AND j.model_type = d.model_type
                    AND j.status IN ('queued', 'in_progress'))
            ORDER BY d.dataset_id
        """),
                {"dataset_id": dataset_id},
            )
        ).all()
        return await self.admit(
            [
                TriggerRequest(
                    event_id=f"ready:{r.dataset_id}:{r.total_samples}",
                    dataset_id=r.dataset_id,
                    model_type=r.model_type,
                    priority=priority,
                    source=source,
                    reason={"kind": "threshold", "total_samples": r.total_samples},
                )
                for r in rows
            ]
        )

    # -- a worker's transitions --------------------------------------------------------------------
    async def claim(self, *, worker: str, lease: timedelta, caps: Mapping[str, int] | None = None) -> Transition | None:
        """The best waiting job (highest priority, then oldest, with ageing), skipping model types
        at their cap of running jobs across all workers and follow-ups whose dataset still trains,
        leased to `worker`, with its `in_progress` event: one statement (`CLAIM_SQL`)."""
        excluded: list[str] = []
        if caps:
            # Claims serialise while caps apply, so two workers cannot both take the last slot.
            await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtext('fcl-claim-caps'))"))
            running: dict[str, int] = {
                row.model_type: row.n
                for row in (
                    await self.session.execute(
                        text(
                            "SELECT model_type, count(*) AS n FROM training_jobs WHERE status = 'in_progress' "
                            "GROUP BY model_type"
                        )
                    )
                ).all()
            }
            excluded = [t for t, cap in caps.items() if running.get(t, 0) >= cap]
        params = claim_params(worker, lease, excluded)
        row = (await self.session.execute(CLAIM, params)).mappings().first()
        if row is None:
            return None
        return Transition(job=Job.from_mapping(row), before=JobStatus.QUEUED, events=1)

    async def heartbeat(
        self, lease: Lease, *, lease_for: timedelta, progress: float | None = None, publish: bool = False
    ) -> Transition:
        """Extend the lease and keep the training's progress; with `publish`, also announce the
        progress (an `in_progress` event) unless a cancel was asked for. The returned job says
        whether it was (`cancel_requested`)."""
        row = (
            (
                await self.session.execute(
                    text(f"""
            UPDATE training_jobs AS j
            SET lease_expires_at = now() + :lease_for, updated_at = now(), progress = coalesce(:progress, j.progress)
            WHERE j.id = :id AND j.lease_token = :token AND j.status = 'in_progress'
            RETURNING {JOB}
        """),
                    {"id": lease.job_id, "token": lease.token, "lease_for": lease_for, "progress": progress},
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise LeaseLost(f"the lease of job {lease.job_id} is not held by {lease.owner}")
        job = Job.from_mapping(row)
        events = 0
        if publish and progress is not None and not job.cancel_requested:
            events = await self._publish(
                [status_event(job, JobStatus.IN_PROGRESS, progress=round(progress, 3), message="training")]
            )
        return Transition(job=job, before=JobStatus.IN_PROGRESS, events=events)

    async def complete(self, lease: Lease, attempt: CompletedAttempt) -> Transition:
        """Record a trained and validated candidate in one go: the attempt row, the model version
        (the next number of its type), its checks, the champion move when the gate passed
        (compare-and-swap against the champion the candidate was validated against:
        `ChampionMoved` when it moved meanwhile, and nothing is written), the samples it used
        taken off the dataset's counter, the job completed, and the `completed`,
        `training-validation` and (on promotion) `model-versions` events. One round trip: the
        server-side function `fcl_complete_job` (migration 0025) makes every write from
        `completion_document`; `LeaseLost`, `ChampionMoved` and `JobStateConflict` are what it
        raises. When samples came during the training, the next job is admitted here too."""
        try:
            row = (await self.session.execute(COMPLETE, {"p": json.dumps(completion_document(lease, attempt))})).one()
        except DBAPIError as exc:
            raise wrap(exc) from exc
        done = completion(row._mapping, attempt)
        if row.ready:
            await self.retrain_if_ready(done.job)
        return done

    async def completed_by(self, lease: Lease, attempt: int) -> Transition | None:
        """The completion that `lease`'s holder already committed for `attempt` of its job, or
        None: what makes retrying `complete` after a transient error safe (its commit may have
        happened before the connection dropped; the lease is then gone, and this says so)."""
        row = (
            (
                await self.session.execute(
                    text(f"""
            SELECT {JOB} FROM training_jobs j
            JOIN training_events e ON e.job_id = j.id AND e.attempt = :attempt
            WHERE j.id = :id AND j.status = 'completed' AND e.status = 'completed' AND e.worker = :owner
        """),
                    {"id": lease.job_id, "attempt": attempt, "owner": lease.owner},
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        job = Job.from_mapping(row)
        return Transition(job=job, before=JobStatus.IN_PROGRESS, model_version=job.model_version)

    async def fail(self, lease: Lease, attempt: EndedAttempt, decision: RetryDecision) -> Transition:
        """Record a failed attempt: back to the queue after the decision's delay when it says
        retry and attempts remain, else failed for good."""
        job = await rows.leased(self.session, lease)
        error = (attempt.error_type, attempt.message[: limits.MAX_MESSAGE_CHARS])
        training_event_id = await self._ended(job, lease, TrainingEventStatus.FAILED, attempt)
        if decision.retry and job.attempts < job.max_attempts:
            after, merged = await rows.requeue(
                self.session, job, delay=decision.delay, attempts=job.attempts, error=error
            )
            message = f"attempt {job.attempts} failed; retrying in {decision.delay.total_seconds():.0f}s"
        else:
            after, merged = await rows.finish(self.session, job, JobStatus.FAILED, error=error), None
            message = "failed"
        events = await self._publish([back_in_queue(after, merged, message, error)])
        await self.retrain_if_ready(after)
        return Transition(
            job=after,
            before=JobStatus.IN_PROGRESS,
            merged_into=merged,
            training_event_id=training_event_id,
            events=events,
        )

    async def finish_cancelled(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        """A running job whose cancellation its worker carried out: cancelled, no version."""
        job = await rows.leased(self.session, lease)
        training_event_id = await self._ended(job, lease, TrainingEventStatus.CANCELLED, attempt)
        done = await rows.finish(self.session, job, JobStatus.CANCELLED, error=None)
        events = await self._publish(
            [status_event(done, JobStatus.CANCELLED, message="cancelled while training; no version recorded")]
        )
        await self.retrain_if_ready(done)
        return Transition(job=done, before=JobStatus.IN_PROGRESS, training_event_id=training_event_id, events=events)

    async def release(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        """Put a job back without counting the attempt: its worker is shutting down."""
        job = await rows.leased(self.session, lease)
        training_event_id = await self._ended(job, lease, TrainingEventStatus.ABANDONED, attempt)
        after, merged = await rows.requeue(
            self.session, job, delay=timedelta(0), attempts=max(0, job.attempts - 1), error=None
        )
        events = await self._publish([back_in_queue(after, merged, "released: the worker is shutting down", None)])
        return Transition(
            job=after,
            before=JobStatus.IN_PROGRESS,
            merged_into=merged,
            training_event_id=training_event_id,
            events=events,
        )

    async def expire_leases(self, *, reclaimed_by: str, limit: int = 100) -> list[Transition]:
        """Jobs whose worker stopped renewing its lease: back to the queue (the lost attempt
        counts) or failed when no attempt is left, each with an `abandoned` attempt row."""
        expired = (
            (
                await self.session.execute(
                    text(f"""
            SELECT {JOB} FROM training_jobs j
            WHERE j.status = 'in_progress' AND j.lease_expires_at < now()
            ORDER BY j.lease_expires_at LIMIT :limit FOR UPDATE SKIP LOCKED
        """),
                    {"limit": limit},
                )
            )
            .mappings()
            .all()
        )
        out = []
        for row in expired:
            job = Job.from_mapping(row)
            error = ("LeaseExpired", f"worker {job.lease_owner} stopped renewing its lease")
            training_event_id = await record_attempt(
                self.session,
                job,
                None,
                TrainingEventStatus.ABANDONED,
                started_at=job.started_at or job.updated_at,
                duration=0.0,
                error=error,
                attempt=max(1, job.attempts),
                worker=reclaimed_by,
            )
            if job.attempts < job.max_attempts:
                after, merged = await rows.requeue(
                    self.session, job, delay=timedelta(0), attempts=job.attempts, error=error
                )
            else:
                after, merged = await rows.finish(self.session, job, JobStatus.FAILED, error=error), None
            events = await self._publish([back_in_queue(after, merged, "lease expired; back in the queue", error)])
            out.append(
                Transition(
                    job=after,
                    before=JobStatus.IN_PROGRESS,
                    merged_into=merged,
                    training_event_id=training_event_id,
                    events=events,
                )
            )
        return out

    # -- an operator's transitions -----------------------------------------------------------------
    async def cancel(self, job_id: uuid.UUID) -> Transition | None:
        """A waiting job is cancelled at once (with its event); a running one is asked to stop
        (its worker stops the training and records the cancellation). `JobStateConflict` for a
        finished job; None for an unknown one."""
        job = await rows.locked(self.session, job_id)
        if job is None:
            return None
        if job.status.is_final:
            raise JobStateConflict(f"job {job_id} is already {job.status.value}; nothing to cancel")
        if job.status is JobStatus.QUEUED:
            done = await rows.finish(self.session, job, JobStatus.CANCELLED, error=None)
            events = await self._publish([status_event(done, JobStatus.CANCELLED, message="cancelled by an operator")])
            return Transition(job=done, before=JobStatus.QUEUED, events=events)
        row = (
            (
                await self.session.execute(
                    text(f"""
            UPDATE training_jobs AS j SET cancel_requested = true, updated_at = now() WHERE j.id = :id RETURNING {JOB}
        """),
                    {"id": job_id},
                )
            )
            .mappings()
            .one()
        )
        return Transition(job=Job.from_mapping(row), before=JobStatus.IN_PROGRESS)

    async def retry(self, job_id: uuid.UUID, *, extra_attempts: int) -> Transition | None:
        """Put a failed or cancelled job back in the queue with `extra_attempts` more attempts, with
        its `queued` event. `JobStateConflict` when the job is not failed or cancelled, or when
        another job already waits for its dataset and model type (that one will train the same
        data); None for an unknown job."""
        job = await rows.locked(self.session, job_id)
        if job is None:
            return None
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise JobStateConflict(f"job {job_id} is {job.status.value}; only a failed or cancelled job can be retried")
        waiting = await self.session.scalar(
            text("SELECT id FROM training_jobs WHERE dedupe_key = :key AND status = 'queued'"),
            {"key": f"{job.dataset_id}/{job.model_type}"},
        )
        if waiting is not None:
            raise JobStateConflict(
                f"job {waiting} already waits for dataset {job.dataset_id} "
                f"({job.model_type}); it will train the same data"
            )
        row = (
            (
                await self.session.execute(
                    text(f"""
            UPDATE training_jobs AS j
            SET status = 'queued', run_after = now(), updated_at = now(), max_attempts = j.attempts + :extra,
                finished_at = NULL, started_at = NULL, cancel_requested = false, progress = NULL,
                error_type = NULL, error_message = NULL
            WHERE j.id = :id
            RETURNING {JOB}
        """),
                    {"id": job_id, "extra": max(1, extra_attempts)},
                )
            )
            .mappings()
            .one()
        )
        after = Job.from_mapping(row)
        events = await self._publish(
            [status_event(after, JobStatus.QUEUED, attempt=after.attempts + 1, message="re-queued by an operator")]
        )
        return Transition(job=after, before=job.status, events=events)

    # -- the parts ---------------------------------------------------------------------------------
    async def retrain_if_ready(self, job: Job) -> None:
        """A training ended for good (completed, failed, cancelled): when its dataset's counter is
        still at or above the threshold (samples came during it), queue the next one now."""
        if job.status.is_final:
            await self.admit_ready(priority=job.priority, dataset_id=job.dataset_id, source=f"after job {job.id}")

    async def _publish(self, events: Sequence[OutboxEntry]) -> int:
        return await OutboxRepository(self.session).add_many(events)

    async def _ended(self, job: Job, lease: Lease, status: TrainingEventStatus, attempt: EndedAttempt) -> uuid.UUID:
        """The attempt row of an attempt that ended without a result, with its error."""
        return await record_attempt(
            self.session,
            job,
            lease,
            status,
            started_at=attempt.started_at,
            duration=attempt.duration_seconds,
            error=(attempt.error_type, attempt.message),
        )
