"""Refused inputs kept whole for replay (`dead_letters`, migration 0016). The dead-letter topic
carries a bounded letter of each (`streams.parsing.dead_letter`); this table keeps the key and
the value as they arrived, up to FCL_MAX_EVENT_BYTES, for FCL_DEAD_LETTER_RETENTION_DAYS, so that
an operator can send them back through the same door once the cause is fixed
(`fcl dead-letters replay`): the same topic, the same bytes, so the same idempotency."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fcl.storage.entities import DeadLetter, KeptInput, StoredDeadLetter
from fcl.storage.models import DeadLetterRow
from fcl.storage.outbox import OutboxRepository


async def write_dead_letters(session: AsyncSession, letters: Sequence[DeadLetter]) -> None:
    """The letters' events into the outbox and their inputs kept, in the caller's transaction."""
    if not letters:
        return
    await OutboxRepository(session).add_many([letter.event for letter in letters])
    await DeadLetterRepository(session).keep([letter.kept for letter in letters])


class DeadLetterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def keep(self, inputs: Sequence[KeptInput]) -> None:
        """Keep refused inputs; one already kept (a redelivered record) is kept once."""
        if not inputs:
            return
        await self.session.execute(
            insert(DeadLetterRow)
            .values(
                [
                    {
                        "letter_id": i.letter_id,
                        "source_topic": i.source_topic,
                        "partition": i.partition,
                        "offset": i.offset,
                        "key": i.key,
                        "value": i.value,
                        "value_bytes": i.value_bytes,
                        "reason": i.reason,
                    }
                    for i in inputs
                ]
            )
            .on_conflict_do_nothing(index_elements=["letter_id"])
        )

    async def page(
        self,
        *,
        limit: int,
        after: int = 0,
        ids: Sequence[int] | None = None,
        reason: str | None = None,
        since: datetime | None = None,
    ) -> list[StoredDeadLetter]:
        """Kept inputs oldest first, after the id `after`: only `ids` when given, only those whose
        reason contains `reason` and that were kept since `since`."""
        query = select(DeadLetterRow).where(DeadLetterRow.id > after).order_by(DeadLetterRow.id).limit(limit)
        if ids is not None:
            query = query.where(DeadLetterRow.id.in_(list(ids)))
        if reason is not None:
            query = query.where(func.strpos(DeadLetterRow.reason, reason) > 0)
        if since is not None:
            query = query.where(DeadLetterRow.created_at >= since)
        return [_entity(r) for r in (await self.session.scalars(query)).all()]

    async def get(self, letter: int) -> StoredDeadLetter | None:
        row = await self.session.get(DeadLetterRow, letter)
        return _entity(row) if row else None

    async def replayed(self, ids: Sequence[int]) -> None:
        if ids:
            await self.session.execute(
                update(DeadLetterRow)
                .where(DeadLetterRow.id.in_(list(ids)))
                .values(replayed_at=func.now(), replays=DeadLetterRow.replays + 1)
            )

    async def forget_before(self, horizon: datetime) -> int:
        result = await self.session.execute(delete(DeadLetterRow).where(DeadLetterRow.created_at < horizon))
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)


def _entity(row: DeadLetterRow) -> StoredDeadLetter:
    return StoredDeadLetter(
        id=row.id,
        letter_id=row.letter_id,
        source_topic=row.source_topic,
        partition=row.partition,
        offset=row.offset,
        key=row.key,
        value=row.value,
        value_bytes=row.value_bytes,
        reason=row.reason,
        created_at=row.created_at,
        replayed_at=row.replayed_at,
        replays=row.replays,
    )
