"""`WorkerStore`: what a trainer worker does with the database (`WorkerQueue`), each method one
transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, and_, func, literal, select

from fcl.contract.enums import AdmissionOutcome
from fcl.storage.datasets import (
    SampleRetention,
)
from fcl.storage.db import Database, Statement
from fcl.storage.deadletters import DeadLetterRepository
from fcl.storage.entities import (
    Admission,
    Champion,
    CompletedAttempt,
    EndedAttempt,
    Job,
    Lease,
    ModelVersion,
    TrainingInputs,
    Transition,
    TriggerRequest,
)
from fcl.storage.jobs import WorkerRepository
from fcl.storage.live import (
    LiveRepository,
    RetrainReason,
    ServingChampion,
    ShadowChallenger,
    ShadowPairs,
    VersionToEvaluate,
    WindowPairs,
)
from fcl.storage.models import ChampionLedgerRow, DatasetRow, ModelVersionRow, TrainingSampleRow
from fcl.storage.outbox import OutboxRepository
from fcl.storage.queue import JobQueue
from fcl.storage.queue.completion import COMPLETE_SQL, completion, completion_document, job_of
from fcl.storage.queue.statements import CLAIM_SQL, claim_params
from fcl.storage.registry import (
    OperatorRequests,
    RetentionRepository,
)
from fcl.storage.retry import RetryDecision

COMPLETE = Statement(COMPLETE_SQL)


def inputs_statement(dataset_id: str, model_type: str) -> Select[Any]:
    """What a job needs before it trains, in one row: the newest sample's id of its dataset, the
    dataset's shape, and its model type's champion (the ledger's newest move, its version), the
    last two None for the first model of its type."""
    newest = (
        select(ChampionLedgerRow.id)
        .where(ChampionLedgerRow.model_type == model_type)
        .order_by(ChampionLedgerRow.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    watermark = (
        select(func.coalesce(func.max(TrainingSampleRow.id), 0))
        .where(TrainingSampleRow.dataset_id == dataset_id)
        .scalar_subquery()
    )
    one = select(literal(1).label("one")).subquery()
    return (
        select(watermark.label("watermark"), DatasetRow.shape_from_id, DatasetRow.shape_version)
        .add_columns(ChampionLedgerRow, ModelVersionRow)
        .select_from(one)
        .outerjoin(DatasetRow, DatasetRow.dataset_id == dataset_id)
        .outerjoin(ChampionLedgerRow, ChampionLedgerRow.id == newest)
        .outerjoin(
            ModelVersionRow,
            and_(
                ModelVersionRow.model_type == ChampionLedgerRow.model_type,
                ModelVersionRow.version == ChampionLedgerRow.version,
            ),
        )
    )


CLAIM = Statement(CLAIM_SQL)


@dataclass(frozen=True, kw_only=True)
class WorkerBeat:
    """A worker's heartbeat row: who it is and which jobs it runs (`/training-status` shows it)."""

    worker_id: str
    hostname: str
    pid: int
    running: tuple[uuid.UUID, ...]
    info: Mapping[str, Any]


class WorkerQueue(Protocol):
    """Everything a trainer worker does with storage. `WorkerStore` is the real one; the worker's
    unit tests use an in-memory fake of this same interface."""

    async def claim(self, worker: str, *, lease: timedelta, caps: Mapping[str, int]) -> Job | None: ...

    async def inputs(self, job: Job) -> TrainingInputs: ...

    async def heartbeat(self, lease: Lease, *, lease_for: timedelta, progress: float | None, publish: bool) -> Job: ...

    async def complete(self, lease: Lease, attempt: CompletedAttempt) -> Transition: ...

    async def completed_by(self, lease: Lease, attempt: int) -> Transition | None: ...

    async def fail(self, lease: Lease, attempt: EndedAttempt, decision: RetryDecision) -> Transition: ...

    async def finish_cancelled(self, lease: Lease, attempt: EndedAttempt) -> Transition: ...

    async def release(self, lease: Lease, attempt: EndedAttempt) -> Transition: ...

    async def expire_leases(self, worker: str) -> list[Transition]: ...

    async def admit_ready(self, *, priority: int) -> int: ...

    async def announce(self, beat: WorkerBeat) -> None: ...

    async def leave(self, worker: str) -> None: ...

    async def unpublished_events(self) -> int: ...


class WorkerStore:
    """`WorkerQueue` on PostgreSQL: each call one transaction of `JobQueue`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, worker: str, *, lease: timedelta, caps: Mapping[str, int]) -> Job | None:
        """The best waiting job leased to `worker`. Without caps the claim is one statement, run on
        its own (one round trip); with caps it counts the running jobs first, in a transaction."""
        if caps:
            async with self.db.transaction() as s:
                claimed = await JobQueue(s).claim(worker=worker, lease=lease, caps=caps)
            return claimed.job if claimed else None
        row = await self.db.row(CLAIM, claim_params(worker, lease))
        return job_of(row) if row is not None else None

    async def inputs(self, job: Job) -> TrainingInputs:
        """The watermark, the dataset's shape and the champion (its ledger move and its version):
        one statement."""
        async with self.db.transaction() as s:
            row = (await s.execute(inputs_statement(job.dataset_id, job.model_type))).one()
        move = row.ChampionLedgerRow.to_entity() if row.ChampionLedgerRow is not None else None
        version = row.ModelVersionRow.to_entity() if row.ModelVersionRow is not None else None
        return TrainingInputs(
            watermark=int(row.watermark),
            champion=Champion(move=move, version=version) if move and version else None,
            shape_from_id=row.shape_from_id if row.shape_from_id is not None else 0,
            shape_version=row.shape_version if row.shape_version is not None else 1,
        )

    async def heartbeat(self, lease: Lease, *, lease_for: timedelta, progress: float | None, publish: bool) -> Job:
        async with self.db.transaction() as s:
            beat = await JobQueue(s).heartbeat(lease, lease_for=lease_for, progress=progress, publish=publish)
        return beat.job

    async def complete(self, lease: Lease, attempt: CompletedAttempt) -> Transition:
        """`JobQueue.complete` in one round trip: `fcl_complete_job` run as a statement of its own.
        When samples came during the training, the next job is admitted after it, in a
        transaction of its own (should that one fail, the worker's retrain sweep admits it)."""
        row = await self.db.row(COMPLETE, {"p": json.dumps(completion_document(lease, attempt))})
        done = completion(row, attempt)
        if row["ready"]:
            async with self.db.transaction() as s:
                await JobQueue(s).retrain_if_ready(done.job)
        return done

    async def completed_by(self, lease: Lease, attempt: int) -> Transition | None:
        async with self.db.transaction() as s:
            return await JobQueue(s).completed_by(lease, attempt)

    async def fail(self, lease: Lease, attempt: EndedAttempt, decision: RetryDecision) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).fail(lease, attempt, decision)

    async def finish_cancelled(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).finish_cancelled(lease, attempt)

    async def release(self, lease: Lease, attempt: EndedAttempt) -> Transition:
        async with self.db.transaction() as s:
            return await JobQueue(s).release(lease, attempt)

    async def expire_leases(self, worker: str) -> list[Transition]:
        async with self.db.transaction() as s:
            return await JobQueue(s).expire_leases(reclaimed_by=worker)

    async def admit_ready(self, *, priority: int) -> int:
        """The retrain sweep; the number of jobs it created."""
        async with self.db.transaction() as s:
            admitted = await JobQueue(s).admit_ready(priority=priority, source="retrain-sweep")
        return sum(1 for a in admitted if a.outcome is AdmissionOutcome.CREATED)

    async def announce(self, beat: WorkerBeat) -> None:
        async with self.db.transaction() as s:
            await WorkerRepository(s).beat(
                worker_id=beat.worker_id,
                hostname=beat.hostname,
                pid=beat.pid,
                current_job_ids=list(beat.running),
                info=dict(beat.info),
            )

    async def leave(self, worker: str) -> None:
        async with self.db.transaction() as s:
            await WorkerRepository(s).remove(worker)

    async def unpublished_events(self) -> int:
        async with self.db.transaction() as s:
            return await OutboxRepository(s).unpublished()

    # -- retention (worker.retention) --
    async def sample_retention(
        self, *, keep_days: float, windows: dict[str, int], partition_seconds: int = 86400, ahead: int = 9
    ) -> list[str]:
        """Keep `ahead` partitions made ahead, and drop the old ones nothing needs; their names."""
        async with self.db.transaction() as s:
            retention = SampleRetention(s)
            await retention.ensure_partitions(ahead, width_seconds=partition_seconds)
            return await retention.drop_old_days(keep_days=keep_days, windows=windows)

    async def forget_sample_batches(self, *, keep_days: float) -> int:
        """Forget the ids of the samples events whose samples have all gone; how many."""
        async with self.db.transaction() as s:
            return await SampleRetention(s).forget_batches(keep_days=keep_days)

    async def forget_dead_letters(self, *, older_than: timedelta) -> int:
        """Delete the kept refused inputs older than `older_than`."""
        async with self.db.transaction() as s:
            return await DeadLetterRepository(s).forget_before(datetime.now(UTC) - older_than)

    async def forget_operator_keys(self, *, older_than: timedelta) -> int:
        """Forget the Idempotency-Keys of champion moves older than `older_than`."""
        async with self.db.transaction() as s:
            return await OperatorRequests(s).forget_before(datetime.now(UTC) - older_than)

    async def forget_predictions(self, *, older_than: timedelta) -> int:
        async with self.db.transaction() as s:
            return await LiveRepository(s).forget(older_than=older_than)

    async def take_live_turn(self, every: float) -> bool:
        async with self.db.transaction() as s:
            return await LiveRepository(s).take_turn(every)

    async def versions_to_evaluate(self, within: timedelta) -> list[VersionToEvaluate]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).versions_to_evaluate(within)

    async def live_windows(
        self, model_type: str, version: int, *, sinces: Mapping[str, datetime], until: datetime, limit: int
    ) -> dict[str, WindowPairs]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).windows(model_type, version, sinces=sinces, until=until, limit=limit)

    async def champions(self) -> list[ServingChampion]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).champions()

    async def retrain_for(self, reason: RetrainReason, *, priority: int) -> Admission | None:
        """Queue a job for `reason` (the champion's dataset), once: None when it fired before. The
        reason and the job it queued (or joined) are recorded in the same transaction."""
        async with self.db.transaction() as s:
            live = LiveRepository(s)
            if not await live.fire(reason):
                return None
            (admission,) = await JobQueue(s).admit(
                [
                    TriggerRequest(
                        event_id=reason.event_id,
                        dataset_id=reason.dataset_id,
                        model_type=reason.model_type,
                        priority=priority,
                        source="live-evaluation",
                        reason=reason.figures,
                    )
                ]
            )
            await live.fired(reason, admission.job_id)
            return admission

    async def save_live_figures(self, model_type: str, version: int, window: str, figures: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            await LiveRepository(s).save_figures(model_type, version, window, figures)

    async def shadows(self) -> list[ShadowChallenger]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).shadows()

    async def versions_to_compare(self, model_type: str, versions: Sequence[int]) -> dict[int, VersionToEvaluate]:
        async with self.db.transaction() as s:
            return await LiveRepository(s).versions(model_type, versions)

    async def shadow_window(
        self, model_type: str, *, champion: int, challenger: int, since: datetime, until: datetime, limit: int
    ) -> ShadowPairs:
        async with self.db.transaction() as s:
            return await LiveRepository(s).shadow_window(
                model_type, champion=champion, challenger=challenger, since=since, until=until, limit=limit
            )

    async def save_shadow_figures(self, model_type: str, window: str, figures: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            await LiveRepository(s).save_shadow_figures(model_type, window, figures)

    async def mark_for_retention(self, model_type: str, *, keep_versions: int, keep_days: float) -> list[int]:
        """Mark the versions the retention no longer keeps as deleted; their numbers."""
        async with self.db.transaction() as s:
            return await RetentionRepository(s).mark(model_type, keep_versions=keep_versions, keep_days=keep_days)

    async def artifacts_to_remove(self) -> list[ModelVersion]:
        async with self.db.transaction() as s:
            return await RetentionRepository(s).artifacts_to_remove()

    async def artifact_removed(self, model_type: str, version: int) -> None:
        async with self.db.transaction() as s:
            await RetentionRepository(s).artifact_removed(model_type, version)
