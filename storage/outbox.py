"""The outbox relay: publishes committed outbox rows to their topics, in order, then marks them.

It knows nothing of Kafka: it is given `send(topic, key, value)`, which schedules a record and
returns an awaitable of its delivery. It is woken by PostgreSQL: every outbox insert NOTIFYs
`fcl_outbox` at commit (migration 0006), whichever process wrote it; a poll every
`idle_interval` is the safety net (every 0.2 s while the notification connection is down).

At-least-once: a crash between the broker's acknowledgement and the mark sends those rows again,
with the same `event_id`, which is how consumers drop repeats. Only one relay sends at a time (a
transaction-level advisory lock), so rows leave in the order they were committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from storage.db import Database
from storage.notifications import OUTBOX_CHANNEL, Notifications
from storage.repositories import OutboxRepository

log = logging.getLogger(__name__)

# send(topic, key, value) schedules a record and returns an awaitable of its delivery.
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]
RELAY_LOCK = "fcl-outbox-relay"


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        send: Send,
        *,
        topic_prefix: str,
        notifications: Notifications | None = None,
        batch: int = 500,
        idle_interval: float = 1.0,
    ) -> None:
        self.db = db
        self.send = send
        self.topic_prefix = topic_prefix
        self.batch = batch
        self.idle_interval = idle_interval
        self.notifications = notifications
        self.published = 0
        self._wake = asyncio.Event()
        if notifications is not None:
            notifications.subscribe(OUTBOX_CHANNEL, lambda _payload: self._wake.set())
            notifications.on_connect(self._wake.set)  # rows committed while the connection was down

    async def publish_once(self) -> int:
        """Publish up to one batch; the number of rows published (0: none pending or another
        relay holds the turn)."""
        async with self.db.transaction() as session:
            got_turn = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext(:lock))"), {"lock": RELAY_LOCK}
            )
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
            self._wake.clear()
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
                listening = self.notifications is not None and self.notifications.healthy
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_interval if listening else 0.2)
                except TimeoutError:
                    pass

    def stop_soon(self) -> None:
        """Wake the loop so that it sees its stop condition now."""
        self._wake.set()
