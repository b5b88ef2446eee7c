"""The long way to the views `storage.reads` builds in one statement: ORM reads of the same rows,
turned into entities, from which tests build the documents they expect. They live with the tests
(production reads through `storage.reads` and the stores only) and are the oracle
tests/integration/test_reads.py checks the read views against."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ARRAY, String, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract.enums import JobStatus
from fcl.storage.entities import ChampionMove, Dataset, Job, TrainingEvent, WorkerHeartbeat
from fcl.storage.models import ChampionLedgerRow, DatasetRow, TrainingEventRow, TrainingJobRow, WorkerHeartbeatRow


async def job_counts(session: AsyncSession) -> dict[str, int]:
    """Jobs per status (every status present, zero when none)."""
    rows = (await session.execute(select(TrainingJobRow.status, func.count()).group_by(TrainingJobRow.status))).all()
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


async def job_running(session: AsyncSession) -> list[Job]:
    rows = (
        await session.scalars(
            select(TrainingJobRow)
            .where(TrainingJobRow.status == JobStatus.IN_PROGRESS.value)
            .order_by(TrainingJobRow.started_at, TrainingJobRow.id)
        )
    ).all()
    return [r.to_entity() for r in rows]


async def job_waiting(session: AsyncSession, *, limit: int = 20) -> list[Job]:
    """The waiting jobs in the order workers will claim them."""
    rows = (
        await session.scalars(
            select(TrainingJobRow)
            .where(TrainingJobRow.status == JobStatus.QUEUED.value)
            .order_by(TrainingJobRow.rank_at, TrainingJobRow.id)
            .limit(limit)
        )
    ).all()
    return [r.to_entity() for r in rows]


async def trainingevent_page(
    session: AsyncSession,
    *,
    limit: int,
    model_type: str | None = None,
    status: str | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[TrainingEvent]:
    """Newest first by (started_at, id); `before` is the last row of the previous page."""
    query = select(TrainingEventRow)
    if model_type is not None:
        query = query.where(TrainingEventRow.model_type == model_type)
    if status is not None:
        query = query.where(TrainingEventRow.status == status)
    if before is not None:
        query = query.where(func.row(TrainingEventRow.started_at, TrainingEventRow.id) < func.row(before[0], before[1]))
    query = query.order_by(TrainingEventRow.started_at.desc(), TrainingEventRow.id.desc()).limit(limit)
    return [r.to_entity() for r in (await session.scalars(query)).all()]


async def trainingevent_latest_per_model_type(
    session: AsyncSession, model_types: Iterable[str]
) -> dict[str, TrainingEvent]:
    """Each model type's newest training event: one statement, an index lookup per type."""
    newest = (
        select(TrainingEventRow.id)
        .where(TrainingEventRow.model_type == text("t.model_type"))
        .order_by(TrainingEventRow.started_at.desc(), TrainingEventRow.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    types = select(func.unnest(cast(list(model_types), ARRAY(String))).label("model_type")).subquery("t")
    rows = (
        await session.scalars(
            select(TrainingEventRow).where(TrainingEventRow.id.in_(select(newest).select_from(types)))
        )
    ).all()
    return {r.model_type: r.to_entity() for r in rows}


async def worker_seen_since(session: AsyncSession, seconds: float) -> list[WorkerHeartbeat]:
    rows = (
        await session.scalars(
            select(WorkerHeartbeatRow)
            .where(WorkerHeartbeatRow.last_seen_at > func.now() - timedelta(seconds=seconds))
            .order_by(WorkerHeartbeatRow.worker_id)
        )
    ).all()
    return [r.to_entity() for r in rows]


async def champion_all_current(session: AsyncSession) -> dict[str, ChampionMove]:
    newest = (
        select(ChampionLedgerRow.model_type, func.max(ChampionLedgerRow.seq).label("seq"))
        .group_by(ChampionLedgerRow.model_type)
        .subquery()
    )
    rows = (
        await session.scalars(
            select(ChampionLedgerRow).join(
                newest,
                (ChampionLedgerRow.model_type == newest.c.model_type) & (ChampionLedgerRow.seq == newest.c.seq),
            )
        )
    ).all()
    return {r.model_type: r.to_entity() for r in rows}


async def champion_ledger(session: AsyncSession, model_type: str | None = None, limit: int = 100) -> list[ChampionMove]:
    """The newest moves first, of one model type or of all."""
    query = select(ChampionLedgerRow).order_by(ChampionLedgerRow.created_at.desc(), ChampionLedgerRow.id.desc())
    if model_type is not None:
        query = query.where(ChampionLedgerRow.model_type == model_type)
    return [r.to_entity() for r in (await session.scalars(query.limit(limit))).all()]


async def dataset_ready(session: AsyncSession) -> list[Dataset]:
    """Datasets whose counter has reached their threshold."""
    rows = (
        await session.scalars(
            select(DatasetRow)
            .where(DatasetRow.samples_since_training >= DatasetRow.threshold)
            .order_by(DatasetRow.dataset_id)
        )
    ).all()
    return [r.to_entity() for r in rows]
