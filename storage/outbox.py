"""The outbox relay: publishes committed outbox rows to their topics, in order, then marks them.

It knows nothing of Kafka: it is given `send(topic, key, value, headers)`, which schedules a
record and returns an awaitable of its delivery; a job's events carry the job's `traceparent` as a
header (fcl.contract.tracing). It is woken by PostgreSQL: every outbox insert NOTIFYs
`fcl_outbox` at commit (migration 0006), whichever process wrote it; a poll every
`idle_interval` is the safety net (every 0.2 s while the notification connection is down).

At-least-once: a crash between the broker's acknowledgement and the mark sends those rows again,
with the same `event_id`, which is how consumers drop repeats. Only one relay sends at a time (a
transaction-level advisory lock), so rows leave in the order they were committed.

Never wedged: a row the broker refuses for what it is (`is_record_error`: too large, a bad topic)
is tried `max_attempts` times, then parked — kept with its error, counted in /metrics, skipped —
and the rows after it go on. An outage (anything else) is waited out without counting. Published
rows are deleted once older than `retention` seconds, so the table does not grow forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import CursorResult, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from fcl.contract import limits
from fcl.contract.backoff import retrying
from fcl.contract.service import Service
from fcl.contract.settings import Settings
from fcl.contract.tracing import headers_for
from fcl.storage.db import Database
from fcl.storage.entities import (
    EncodedOutboxMessage,
    OutboxFigure,
    ParkedOutboxRow,
)
from fcl.storage.errors import DRIVER_ERRORS, wrap
from fcl.storage.notifications import OUTBOX_CHANNEL, Notifications

log = logging.getLogger(__name__)

# send(topic, key, value, headers) schedules a record and returns an awaitable of its delivery.
Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]] | None], Awaitable[Awaitable[object]]]
RELAY_LOCK = "fcl-outbox-relay"
TRY_TURN = text("SELECT pg_try_advisory_lock(hashtext(:lock))")
GIVE_TURN = text("SELECT pg_advisory_unlock(hashtext(:lock))")
HOLD_SECONDS = 0.1  # a relay with work keeps its turn this long for the next commit


class OutboxRelay(Service):
    """A `contract.service.Service`: `start()` relays until `stop()`; a Faust task may instead
    await `run(should_stop=...)` with the app's own stop condition."""

    name = "outbox-relay"
    grace = 10.0

    def __init__(
        self,
        db: Database,
        send: Send,
        *,
        topic_prefix: str,
        notifications: Notifications | None = None,
        batch: int = 500,
        idle_interval: float = 1.0,
        is_record_error: Callable[[BaseException], bool] = lambda exc: False,
        max_attempts: int = 5,
        retention: float = 3600.0,
    ) -> None:
        super().__init__()
        self.db = db
        self.send = send
        self.topic_prefix = topic_prefix
        self.batch = batch
        self.idle_interval = idle_interval
        self.notifications = notifications
        self.is_record_error = is_record_error
        self.max_attempts = max_attempts
        self.retention = retention
        self.published = 0
        self.parked = 0
        self._last_purge = 0.0
        self._wake = asyncio.Event()
        if notifications is not None:
            notifications.subscribe(OUTBOX_CHANNEL, lambda _payload: self._wake.set())
            notifications.on_connect(self._wake.set)  # rows committed while the connection was down

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        db: Database,
        send: Send,
        *,
        notifications: Notifications | None,
        is_record_error: Callable[[BaseException], bool],
    ) -> OutboxRelay:
        return cls(
            db,
            send,
            topic_prefix=settings.topic_prefix,
            notifications=notifications,
            is_record_error=is_record_error,
            max_attempts=settings.outbox_max_attempts,
            retention=settings.outbox_retention_seconds,
        )

    async def publish_once(self) -> int:
        """Publish up to one batch; the number of rows published (0: none pending or another
        relay holds the turn). Rows the broker refused for what they are are counted (and
        parked at `max_attempts`); an outage is raised after the rows that did go are marked.

        No transaction is open while the records are sent: the turn is a session-level advisory
        lock on one connection, the batch is read in one short transaction and marked in another.
        A broker that is slow (an offline partition waits out the producer's timeout) therefore
        holds no row locks and no snapshot that keeps PostgreSQL's vacuum from cleaning up."""
        return await self._with_turn(self._publish_batch)

    async def publish_while_busy(self) -> int:
        """`publish_once`, batch after batch while rows keep coming: the turn is kept until no
        commit has woken the relay for `HOLD_SECONDS` (a busy stream commits every few
        milliseconds; taking and giving back the turn for each of its commits cost four
        statements a batch). The rows published in all."""

        async def batches(conn: AsyncConnection) -> int:
            total = 0
            while True:
                self._wake.clear()
                sent = await self._publish_batch(conn)
                total += sent
                if self.stopping:
                    return total
                if sent < self.batch:
                    try:
                        await asyncio.wait_for(self._wake.wait(), HOLD_SECONDS)
                    except TimeoutError:
                        return total

        return await self._with_turn(batches)

    async def _with_turn(self, work: Callable[[AsyncConnection], Awaitable[int]]) -> int:
        """`work(conn)` while this relay holds the turn on `conn`; 0 when another relay holds it."""
        try:
            async with self.db.engine.connect() as conn:
                got_turn = await conn.scalar(TRY_TURN, {"lock": RELAY_LOCK})
                await conn.commit()
                if not got_turn:
                    return 0
                try:
                    return await work(conn)
                finally:
                    try:
                        await conn.execute(GIVE_TURN, {"lock": RELAY_LOCK})
                        await conn.commit()
                    except DRIVER_ERRORS:
                        await conn.invalidate()  # the server releases the turn with the connection
        except DRIVER_ERRORS as exc:
            raise wrap(exc) from exc

    async def _publish_batch(self, conn: AsyncConnection) -> int:
        async with AsyncSession(bind=conn, expire_on_commit=False) as session:
            outbox = OutboxRepository(session)
            await self._purge(outbox)
            pending = await outbox.pending_encoded(limit=self.batch)
            await session.commit()  # nothing held while the broker answers
            if not pending:
                return 0
            deliveries: list[Awaitable[object] | BaseException] = []
            for message in pending:
                key = message.key.encode() if message.key is not None else None
                try:
                    deliveries.append(
                        await self.send(
                            self.topic_prefix + message.topic,
                            key,
                            message.payload_json.encode(),
                            headers_for(message.trace_context),
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - judged below, row by row
                    deliveries.append(exc)
            # the deliveries are futures already: gathered as they are (no task per record)
            pending_deliveries = [d for d in deliveries if not isinstance(d, BaseException)]
            answers = iter(await asyncio.gather(*pending_deliveries, return_exceptions=True))
            results = [d if isinstance(d, BaseException) else _error_of(next(answers)) for d in deliveries]
            sent = [m.id for m, r in zip(pending, results, strict=True) if r is None]
            refused = [(m.id, r) for m, r in zip(pending, results, strict=True) if r is not None]
            await outbox.mark_published(sent)
            outage = next((e for _, e in refused if not self.is_record_error(e)), None)
            if outage is None and refused:
                parked = await outbox.record_failures(
                    [(i, f"{type(e).__name__}: {e}") for i, e in refused], park_at=self.max_attempts
                )
                self.parked += parked
                for row_id, error in refused:
                    log.warning("outbox row %s refused by the broker: %s: %s", row_id, type(error).__name__, error)
            await session.commit()
        self.published += len(sent)
        if outage is not None:
            raise outage
        return len(sent)

    async def _purge(self, outbox: OutboxRepository) -> None:
        """Delete the rows published longer than `retention` ago (at most once a minute)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_purge >= min(60.0, self.retention):
            self._last_purge = now
            await outbox.delete_published(older_than=self.retention)

    async def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        def done() -> bool:
            return self.stopping or should_stop()

        # The relay outlives broker and database outages: each error is waited out with backoff.
        publish = retrying(what="outbox relay", log=log, should_stop=done)
        while not done():
            self._wake.clear()
            try:
                sent = await publish(self.publish_while_busy)
            except Exception:
                if done():
                    return  # gave up waiting because the process is stopping
                raise
            if sent < self.batch:
                listening = self.notifications is not None and self.notifications.healthy
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_interval if listening else 0.2)
                except TimeoutError:
                    pass

    async def stop(self) -> None:
        self._wake.set()  # out of its idle wait at once
        await super().stop()

    def stop_soon(self) -> None:
        """Wake the loop so that it sees its stop condition now."""
        self._wake.set()


def _error_of(answer: object) -> BaseException | None:
    """None when the record was delivered, else why not; a cancellation or an exit is raised (it
    is not the broker's answer)."""
    if isinstance(answer, BaseException) and not isinstance(answer, Exception):
        raise answer
    return answer if isinstance(answer, Exception) else None


# An outbox row before it is written: (topic without prefix, key, payload).
OutboxEntry = tuple[str, str | None, dict[str, Any]]


# The relay's statements, made once (their text parsed once, the same prepared statement each time).
PENDING = text("""
            SELECT o.id, o.topic, o.key, CAST(o.payload AS text) AS payload_json, j.trace_context
            FROM outbox o
            LEFT JOIN training_jobs j ON j.id = CASE WHEN o.payload->>'job_id' ~ '^[0-9a-fA-F-]{36}$'
                                                     THEN CAST(o.payload->>'job_id' AS uuid) END
            WHERE o.published_at IS NULL AND o.parked_at IS NULL ORDER BY o.id LIMIT :limit FOR UPDATE OF o SKIP LOCKED
        """)
MARK_PUBLISHED = text(
    "UPDATE outbox SET published_at = now() WHERE id = ANY(CAST(:ids AS bigint[])) AND published_at IS NULL"
)


class OutboxRepository:
    """Events to publish, written in the transaction of the change they announce. Every insert
    NOTIFYs `fcl_outbox` at commit (migration 0006), which wakes the relays."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, messages: Sequence[OutboxEntry]) -> int:
        """Queue (topic, key, payload) events in ONE statement, in order; each payload's
        `event_id` (made here when absent) is its outbox key, and an event id already in the
        outbox is not queued again (a redelivered poison's dead letter, a replayed crossing)."""
        if not messages:
            return 0
        ids, topics, keys, payloads = [], [], [], []
        for topic, key, payload in messages:
            ids.append(str(uuid.UUID(str(payload.setdefault("event_id", str(uuid.uuid4()))))))
            topics.append(topic)
            keys.append(key)
            payloads.append(json.dumps(payload, separators=(",", ":")))
        result = await self.session.execute(
            text("""
            INSERT INTO outbox (event_id, topic, key, payload)
            SELECT m.event_id, m.topic, m.key, CAST(m.payload AS jsonb)
            FROM unnest(CAST(:ids AS uuid[]), CAST(:topics AS text[]), CAST(:keys AS text[]),
                        CAST(:payloads AS text[])) WITH ORDINALITY AS m(event_id, topic, key, payload, ord)
            ORDER BY m.ord
            ON CONFLICT (event_id) DO NOTHING
        """),
            {"ids": ids, "topics": topics, "keys": keys, "payloads": payloads},
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)

    async def pending_encoded(self, limit: int = 500) -> list[EncodedOutboxMessage]:
        """The oldest unpublished messages, in order, each payload as its stored JSON text (what
        the relay sends as is); locked so two relays never send one twice at the same time (a
        crash between send and mark still resends: at-least-once)."""
        rows = (await self.session.execute(PENDING, {"limit": limit})).all()
        return [EncodedOutboxMessage(r.id, r.topic, r.key, r.payload_json, r.trace_context) for r in rows]

    async def unpublished(self) -> int:
        """How many rows wait to be published (parked ones not counted)."""
        return int(
            await self.session.scalar(
                text("SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL")
            )
            or 0
        )

    async def figures(self) -> OutboxFigure:
        row = (
            await self.session.execute(
                text("""
            SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending,
                   count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked
            FROM outbox WHERE published_at IS NULL
        """)
            )
        ).one()
        return OutboxFigure(pending=row.pending, parked=row.parked)

    async def parked(self, *, limit: int = 50, after: int = 0) -> list[ParkedOutboxRow]:
        """A page of the rows the relay gave up on, oldest first, with their errors (for an
        operator): the first `limit` with an id above `after`."""
        rows = (
            await self.session.execute(
                text("""
            SELECT id, event_id, topic, key, attempts, last_error, created_at, parked_at,
                   octet_length(CAST(payload AS text)) AS payload_bytes
            FROM outbox WHERE parked_at IS NOT NULL AND published_at IS NULL AND id > :after ORDER BY id
            LIMIT :limit
        """),
                {"limit": limit, "after": after},
            )
        ).all()
        return [ParkedOutboxRow(**r._asdict()) for r in rows]

    async def unpark(self, ids: Sequence[int] | None) -> int:
        """Put parked rows (these, or all when None) back in line with a fresh count of tries,
        once the cause is put right; how many went back. Each keeps its place: rows leave in id
        order, so an unparked row goes before every later row still pending."""
        result = await self.session.execute(
            text("""
            UPDATE outbox SET parked_at = NULL, attempts = 0
            WHERE parked_at IS NOT NULL AND published_at IS NULL
              AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))
        """),
            {"ids": list(ids) if ids is not None else None},
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)

    async def record_failures(self, failures: Sequence[tuple[int, str]], *, park_at: int) -> int:
        """Count one refused try of each (row id, error); a row reaching `park_at` tries is
        parked. The number of rows parked now."""
        if not failures:
            return 0
        result = await self.session.execute(
            text("""
            UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = left(f.error, :limit),
                   parked_at = CASE WHEN o.attempts + 1 >= :park_at THEN now() END
            FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS f(id, error)
            WHERE o.id = f.id
            RETURNING o.parked_at IS NOT NULL AS parked
        """),
            {
                "ids": [i for i, _ in failures],
                "errors": [e for _, e in failures],
                "park_at": park_at,
                "limit": limits.MAX_MESSAGE_CHARS,
            },
        )
        return sum(1 for r in result.all() if r.parked)

    async def delete_published(self, *, older_than: float) -> int:
        """Remove rows published more than `older_than` seconds ago."""
        result = await self.session.execute(
            text("DELETE FROM outbox WHERE published_at < now() - make_interval(secs => :age)"),
            {"age": older_than},
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)

    async def mark_published(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        result = await self.session.execute(MARK_PUBLISHED, {"ids": list(ids)})
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)
