"""The outbox relay: publishes committed outbox rows to their topics, in order, then marks them.

At-least-once: a crash between the broker's acknowledgement and the mark sends those rows
again, with the same `event_id`, which is how consumers drop repeats. Only one relay sends at
a time (a transaction-level advisory lock), so rows leave in the order they were committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from storage.db import Database
from storage.repositories import OutboxRepository

log = logging.getLogger(__name__)

# send(topic, key, value) schedules a record and returns an awaitable of its delivery.
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]
RELAY_LOCK = "fcl-outbox-relay"


class OutboxRelay:
    def __init__(
        self, db: Database, send: Send, *, topic_prefix: str, batch: int = 500, idle_interval: float = 0.2
    ) -> None:
        self.db = db
        self.send = send
        self.topic_prefix = topic_prefix
        self.batch = batch
        self.idle_interval = idle_interval  # polling for rows other processes wrote
        self.published = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called after this process committed outbox rows: publish them now, not at the next poll."""
        self._wake.set()

    async def publish_once(self) -> int:
        """Publish up to one batch; the number of rows published (0: none pending or another
        relay holds the turn)."""
        async with self.db.transaction() as session:
            got_turn = await session.scalar(select(func.pg_try_advisory_xact_lock(func.hashtext(RELAY_LOCK))))
            if not got_turn:
                return 0
            outbox = OutboxRepository(session)
            pending = await outbox.pending_encoded(limit=self.batch)
            if not pending:
                return 0
            deliveries = []
            for message in pending:
                key = message.key.encode() if message.key is not None else None
                deliveries.append(
                    await self.send(self.topic_prefix + message.topic, key, message.payload_json.encode())
                )
            await asyncio.gather(*deliveries)
            await outbox.mark_published([m.id for m in pending])
        self.published += len(pending)
        return len(pending)

    async def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        delay = 0.1
        while not should_stop():
            try:
                sent = await self.publish_once()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay outlives broker and database outages
                log.warning("outbox relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if sent < self.batch:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_interval)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()


class EventPublisher:
    """A Kafka producer and an outbox relay for a process that writes outbox rows but is not a
    streams worker (the HTTP API). It keeps trying to reach the broker in the background, so the
    process serves reads while the broker is down; `broker_ok` asks the broker for metadata."""

    def __init__(self, db: Database, *, bootstrap: str, topic_prefix: str) -> None:
        self.db = db
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.relay: OutboxRelay | None = None
        self._producer: object | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fcl-event-publisher")

    def wake(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def broker_ok(self, timeout: float = 2.0) -> str:
        """'ok', or why the broker cannot be reached."""
        producer = self._producer
        if producer is None:
            return "not connected yet"
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return "ok"

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        delay = 0.5
        while not self._stop.is_set():
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
            try:
                await producer.start()
                break
            except Exception as exc:  # noqa: BLE001 - keep trying; reads do not need the broker
                log.warning("event publisher: broker not reachable (%s); retrying in %.1fs", exc, delay)
                await producer.stop()
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
        else:
            return
        self._producer = producer

        async def send(topic: str, key: bytes | None, value: bytes) -> Awaitable[object]:
            return await producer.send(topic, value, key=key)

        self.relay = OutboxRelay(self.db, send, topic_prefix=self.topic_prefix)
        try:
            await self.relay.run(should_stop=self._stop.is_set)
        finally:
            await producer.stop()

    async def stop(self) -> None:
        self._stop.set()
        self.wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
