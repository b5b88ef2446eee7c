"""The model registry: versions, the champion and its ledger, validation checks, retention.

A version is written once (by a job's completion, the function `fcl_complete_job` of migration
0025, or by `ModelVersionRepository.add`), numbered per model type under one advisory lock; the
champion moves only through the ledger (`ChampionRepository.move`: compare-and-swap against the
champion the caller saw, with its `model-versions` event in the outbox; a completion's move is
the same, in the function); retention marks old versions and lists their artifacts for removal.
Every repository works inside the caller's transaction and returns entities from
`storage.entities`, never ORM rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.contract import limits
from fcl.contract.enums import ChampionReason
from fcl.contract.events import ModelVersionEvent, ValidationCheck, rfc3339
from fcl.contract.topics import Topic
from fcl.storage.entities import (
    ChampionMove,
    ModelFigure,
    ModelVersion,
    NewModelVersion,
)
from fcl.storage.errors import (
    AlreadyChampion,
    ChampionMoved,
    ChampionNotExpected,
    IdempotencyKeyReused,
    IntegrityViolation,
    VersionDeleted,
    wrap,
)
from fcl.storage.models import (
    ChampionLedgerRow,
    ModelVersionRow,
    OperatorRequestRow,
    ValidationResultRow,
)
from fcl.storage.outbox import OutboxRepository

VERSION_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
LATEST_VERSION = text("SELECT coalesce(max(version), 0) FROM model_versions WHERE model_type = :model_type")


class ModelVersionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def next_version(self, model_type: str) -> int:
        """The number the next version of `model_type` gets. Holds a transaction-level advisory
        lock per model type until commit, so concurrent recorders never take the same number."""
        # two statements: the second's snapshot must be taken after the lock is held
        await self.session.execute(VERSION_LOCK, {"key": "model_versions:" + model_type})
        latest = await self.session.scalar(LATEST_VERSION, {"model_type": model_type})
        return int(latest or 0) + 1

    async def add(self, new: NewModelVersion, *, version: int | None = None) -> ModelVersion:
        """Record a version: `version` from `next_version` in this transaction, or the next one."""
        number = version if version is not None else await self.next_version(new.model_type)
        fields = {f: getattr(new, f) for f in NewModelVersion.__dataclass_fields__}
        row = (
            await self.session.execute(
                insert(ModelVersionRow).values(version=number, **fields).returning(ModelVersionRow)
            )
        ).scalar_one()
        return row.to_entity()

    async def get(self, model_type: str, version: int) -> ModelVersion | None:
        row = await self.session.get(ModelVersionRow, (model_type, version))
        return row.to_entity() if row else None

    async def for_training_event(self, training_event_id: uuid.UUID) -> ModelVersion | None:
        row = (
            await self.session.scalars(
                select(ModelVersionRow).where(ModelVersionRow.training_event_id == training_event_id)
            )
        ).first()
        return row.to_entity() if row else None

    async def list(self, model_type: str | None = None) -> list[ModelVersion]:
        query = select(ModelVersionRow).order_by(ModelVersionRow.model_type, ModelVersionRow.version.desc())
        if model_type is not None:
            query = query.where(ModelVersionRow.model_type == model_type)
        return [r.to_entity() for r in (await self.session.scalars(query)).all()]


class ModelFigures:
    """The registry's figures for /metrics, one index lookup per model type (not a scan)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def read(self, model_types: Sequence[str]) -> list[ModelFigure]:
        result = await self.session.execute(
            text("""
            SELECT t.model_type, c.version, extract(epoch FROM now() - v.created_at) AS age, d.psi
            FROM unnest(CAST(:types AS text[])) AS t(model_type)
            LEFT JOIN LATERAL (
                SELECT version FROM champion_ledger l WHERE l.model_type = t.model_type ORDER BY seq DESC LIMIT 1
            ) c ON true
            LEFT JOIN model_versions v ON v.model_type = t.model_type AND v.version = c.version
            LEFT JOIN LATERAL (
                SELECT (e.drift->>'psi_max')::float8 AS psi FROM training_events e
                WHERE e.model_type = t.model_type AND e.drift IS NOT NULL
                ORDER BY e.started_at DESC, e.id DESC LIMIT 1
            ) d ON true
            ORDER BY t.model_type
            """),
            {"types": list(model_types)},
        )
        return [
            ModelFigure(
                model_type=r.model_type,
                champion_version=r.version,
                champion_age_seconds=float(r.age) if r.age is not None else None,
                drift_psi_max=float(r.psi) if r.psi is not None else None,
            )
            for r in result.all()
        ]


class ChampionRepository:
    """The append-only champion ledger; the newest row per model type is the champion. Every
    move writes its `model-versions` event to the outbox in the same transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current(self, model_type: str) -> ChampionMove | None:
        row = (
            await self.session.scalars(
                select(ChampionLedgerRow)
                .where(ChampionLedgerRow.model_type == model_type)
                .order_by(ChampionLedgerRow.seq.desc())
                .limit(1)
            )
        ).first()
        return row.to_entity() if row else None

    async def history(self, model_type: str) -> list[ChampionMove]:
        rows = (
            await self.session.scalars(
                select(ChampionLedgerRow)
                .where(ChampionLedgerRow.model_type == model_type)
                .order_by(ChampionLedgerRow.seq)
            )
        ).all()
        return [r.to_entity() for r in rows]

    async def move(
        self,
        *,
        model_type: str,
        version: int,
        expected: ChampionMove | None,
        reason: ChampionReason,
        note: str | None = None,
        actor: str | None = None,
    ) -> ChampionMove:
        """Make `version` the champion only if the champion is still `expected` (compare-and-swap:
        the unique (model_type, seq) refuses a second move from the same state; then
        `ChampionMoved`), and queue its `model-versions` event. A version the retention removed
        cannot serve (`VersionDeleted`); the retention takes the same lock per model type."""
        await lock_champion(self.session, model_type)
        deleted = await self.session.scalar(
            select(ModelVersionRow.deleted_at).where(
                ModelVersionRow.model_type == model_type, ModelVersionRow.version == version
            )
        )
        if deleted is not None:
            raise VersionDeleted(f"{model_type} version {version} was removed by the retention on {deleted:%Y-%m-%d}")
        seq = (expected.seq if expected else 0) + 1
        try:
            async with self.session.begin_nested():
                row = (
                    await self.session.execute(
                        insert(ChampionLedgerRow)
                        .values(
                            model_type=model_type,
                            seq=seq,
                            version=version,
                            previous_version=expected.version if expected else None,
                            reason=reason.value,
                            note=note,
                            actor=actor[: limits.MAX_ID_CHARS] if actor else None,
                            event_id=uuid.uuid4(),
                        )
                        .returning(ChampionLedgerRow)
                    )
                ).scalar_one()
        except Exception as exc:
            error = wrap(exc)
            if isinstance(error, IntegrityViolation) and "uq_champion_ledger_model_type_seq" in str(exc):
                raise ChampionMoved(f"the {model_type} champion moved since it was read") from exc
            raise error from exc
        move = row.to_entity()
        event = ModelVersionEvent(
            event_id=str(move.event_id),
            model_type=model_type,
            version=move.version,
            previous_version=move.previous_version,
            reason=move.reason,
            occurred_at=rfc3339(move.created_at),
        )
        await OutboxRepository(self.session).add_many(
            [(Topic.MODEL_VERSIONS, model_type, event.model_dump(mode="json"))]
        )
        return move

    async def at(self, model_type: str, seq: int) -> ChampionMove | None:
        row = await self.session.scalar(
            select(ChampionLedgerRow).where(ChampionLedgerRow.model_type == model_type, ChampionLedgerRow.seq == seq)
        )
        return row.to_entity() if row else None

    async def rollback(
        self, model_type: str, *, actor: str | None = None, expected_version: int | None = None
    ) -> ChampionMove | None:
        """Make the champion before the current one the champion again. Rollbacks stack: after
        v1, v2, v3 were promoted, one rollback serves v2, a second v1. Returns None when there is
        no earlier champion to go back to; raises `ChampionMoved` when another move won, and
        `ChampionNotExpected` when `expected_version` is given and does not serve."""
        await lock_champion(self.session, model_type)
        moves = await self.history(model_type)
        _check_expected(model_type, moves[-1] if moves else None, expected_version)
        served: list[int] = []
        for move in moves:
            if move.reason is ChampionReason.ROLLBACK and move.version in served:
                while served[-1] != move.version:
                    served.pop()
            else:
                served.append(move.version)
        if len(served) < 2:
            return None
        return await self.move(
            model_type=model_type, version=served[-2], expected=moves[-1], reason=ChampionReason.ROLLBACK, actor=actor
        )

    async def promote(
        self,
        model_type: str,
        version: int,
        *,
        note: str,
        actor: str | None = None,
        expected_version: int | None = None,
    ) -> ChampionMove:
        """Make a recorded version the champion by hand (reason `manual`, the operator's `note`
        kept in the ledger). `LookupError` for a version that was never recorded,
        `AlreadyChampion` when it serves already, `ChampionMoved` when another move won,
        `ChampionNotExpected` when `expected_version` is given and does not serve."""
        if await ModelVersionRepository(self.session).get(model_type, version) is None:
            raise LookupError(f"{model_type} has no version {version}")
        await lock_champion(self.session, model_type)
        current = await self.current(model_type)
        _check_expected(model_type, current, expected_version)
        if current is not None and current.version == version:
            raise AlreadyChampion(f"{model_type} version {version} is already the champion")
        return await self.move(
            model_type=model_type,
            version=version,
            expected=current,
            reason=ChampionReason.MANUAL,
            note=note,
            actor=actor,
        )


class OperatorRequests:
    """The champion moves operators asked for with an Idempotency-Key (operator_requests)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def answered(self, model_type: str, key: str, digest: str) -> ChampionMove | None:
        """The move a request with this key made before (None: none yet), after locking the key
        for this transaction so that two requests with one key are judged one after the other;
        `IdempotencyKeyReused` when the key came with another request."""
        await self.session.execute(select(func.pg_advisory_xact_lock(func.hashtext("fcl-operator-key:" + key))))
        row = await self.session.get(OperatorRequestRow, key, populate_existing=True)
        if row is None:
            return None
        if row.digest != digest or row.model_type != model_type:
            raise IdempotencyKeyReused("this Idempotency-Key was used with another request (path or body)")
        return await ChampionRepository(self.session).at(row.model_type, row.ledger_seq)

    async def remember(self, model_type: str, move: ChampionMove, key: str, digest: str) -> None:
        await self.session.execute(
            insert(OperatorRequestRow).values(key=key, digest=digest, model_type=model_type, ledger_seq=move.seq)
        )

    async def forget_before(self, horizon: datetime) -> int:
        """Delete the keys older than `horizon` (the retention sweep); how many went."""
        result = await self.session.execute(delete(OperatorRequestRow).where(OperatorRequestRow.created_at < horizon))
        return int(getattr(result, "rowcount", 0) or 0)


def _check_expected(model_type: str, current: ChampionMove | None, expected_version: int | None) -> None:
    if expected_version is not None and (current is None or current.version != expected_version):
        serving = f"version {current.version}" if current else "no version"
        raise ChampionNotExpected(f"the {model_type} champion is {serving}, not version {expected_version}")


async def lock_champion(session: AsyncSession, model_type: str) -> None:
    """Serialize champion moves and the retention of one model type until the transaction ends."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("champion:" + model_type))))


class RetentionRepository:
    """Which versions the retention removes, and their artifacts' removal, in steps that can stop
    anywhere and be run again (by any worker, at the same time): a version is first marked deleted
    (it can no longer be promoted or downloaded), then its artifact is removed from the store, then
    that is recorded."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def mark(self, model_type: str, *, keep_versions: int, keep_days: float) -> list[int]:
        """Mark deleted every version of `model_type` that is not the champion, not among the
        newest `keep_versions`, and not named by a ledger move of the last `keep_days`."""
        await lock_champion(self.session, model_type)
        marked = await self.session.scalars(
            text("""
            WITH ranked AS (
                SELECT version, row_number() OVER (ORDER BY version DESC) AS newest
                FROM model_versions WHERE model_type = :t
            ), champion AS (
                SELECT version FROM champion_ledger WHERE model_type = :t ORDER BY seq DESC LIMIT 1
            )
            UPDATE model_versions v SET deleted_at = now()
            FROM ranked r
            WHERE v.model_type = :t AND v.version = r.version AND v.deleted_at IS NULL
              AND r.newest > :keep
              AND v.version IS DISTINCT FROM (SELECT version FROM champion)
              AND NOT EXISTS (
                  SELECT 1 FROM champion_ledger l
                  WHERE l.model_type = :t AND l.created_at > now() - make_interval(secs => :days * 86400)
                    AND (l.version = v.version OR l.previous_version = v.version))
            RETURNING v.version
        """),
            {"t": model_type, "keep": keep_versions, "days": keep_days},
        )
        return sorted(int(v) for v in marked)

    async def artifacts_to_remove(self, limit: int = 100) -> list[ModelVersion]:
        rows = await self.session.scalars(
            select(ModelVersionRow)
            .where(ModelVersionRow.deleted_at.is_not(None), ModelVersionRow.artifact_deleted_at.is_(None))
            .order_by(ModelVersionRow.deleted_at)
            .limit(limit)
        )
        return [r.to_entity() for r in rows.all()]

    async def artifact_removed(self, model_type: str, version: int) -> None:
        await self.session.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.model_type == model_type, ModelVersionRow.version == version)
            .values(artifact_deleted_at=func.now())
        )


class ValidationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        training_event_id: uuid.UUID,
        model_type: str,
        candidate_version: int | None,
        baseline_version: int | None,
        checks: Sequence[ValidationCheck],
    ) -> None:
        if not checks:
            return
        await self.session.execute(
            insert(ValidationResultRow),
            [
                {
                    "training_event_id": training_event_id,
                    "position": i,
                    "model_type": model_type,
                    "candidate_version": candidate_version,
                    "baseline_version": baseline_version,
                    "kind": c.kind.value,
                    "metric": c.metric,
                    "value": c.value,
                    "baseline": c.baseline,
                    "threshold": c.threshold,
                    "direction": c.direction.value,
                    "passed": c.passed,
                }
                for i, c in enumerate(checks)
            ],
        )

    async def for_training_event(self, training_event_id: uuid.UUID) -> list[ValidationCheck]:
        rows = (
            await self.session.scalars(
                select(ValidationResultRow)
                .where(ValidationResultRow.training_event_id == training_event_id)
                .order_by(ValidationResultRow.position)
            )
        ).all()
        return [r.to_entity() for r in rows]
