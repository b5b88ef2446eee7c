"""What PostgreSQL announces with NOTIFY, heard on one LISTEN connection per process.

- `fcl_outbox` (migration 0006): outbox rows were committed; the relays publish them now.
- `fcl_changed` (migration 0005): a watched table changed (the payload names it); cached views of
  it are stale.
- `fcl_queued` (migration 0010): a job was queued; the trainer workers claim now.

`Notifications` keeps the connection, reconnecting with backoff; while it is down `healthy` is
False, and every (re)connect calls the `on_connect` callbacks, since a notification may have been
missed meanwhile. `ChangeListener` counts a generation per watched table on top of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

import asyncpg

from fcl.contract.backoff import retrying
from fcl.contract.service import Service
from fcl.storage.db import asyncpg_dsn

log = logging.getLogger(__name__)
OUTBOX_CHANNEL = "fcl_outbox"
CHANGES_CHANNEL = "fcl_changed"
QUEUED_CHANNEL = "fcl_queued"


class Notifications(Service):
    """A LISTEN connection of its own, kept up for ever (stopping cancels it: `grace` 0)."""

    name = "notifications"
    grace = 0.0

    def __init__(self, url: str) -> None:
        super().__init__()
        self.dsn = asyncpg_dsn(url)
        self.healthy = False
        self._channels: dict[str, list[Callable[[str], None]]] = defaultdict(list)
        self._on_connect: list[Callable[[], None]] = []

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` on each notification of `channel` (subscribe before `start`)."""
        self._channels[channel].append(callback)

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for callback in self._channels.get(channel, ()):
            callback(payload)

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn)
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._deliver)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def run(self) -> None:
        # Reconnect with backoff; until then readers poll or bypass caches.
        connect = retrying(what="notifications", log=log, initial=0.5)
        while True:
            conn = await connect(self._connect)
            self.healthy = True
            for callback in self._on_connect:
                callback()
            try:
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
                    await conn.execute("SELECT 1")  # notice a dead connection within a second
            except asyncio.CancelledError:
                self.healthy = False
                await conn.close()
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect below
                log.warning("notifications: %s: %s; reconnecting", type(exc).__name__, exc)
            self.healthy = False
            if not conn.is_closed():
                conn.terminate()


class ChangeListener:
    """A generation per watched table, moved by `fcl_changed`. A reader that caches a view
    remembers the generations its data came from; when any moved, the view is stale. While the
    connection is down nothing can be trusted, and every generation moves on reconnect."""

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications
        self.generations: defaultdict[str, int] = defaultdict(int)
        self._epoch = 0  # moves on every (re)connect: invalidates everything
        notifications.subscribe(CHANGES_CHANNEL, self._changed)
        notifications.on_connect(self._reconnected)

    @property
    def healthy(self) -> bool:
        return self.notifications.healthy

    def generation(self, tables: Sequence[str]) -> tuple[int, ...] | None:
        """The current generations of `tables`, or None when changes cannot be seen now."""
        if not self.healthy:
            return None
        return (self._epoch, *(self.generations[t] for t in tables))

    def _changed(self, table: str) -> None:
        self.generations[table] += 1

    def _reconnected(self) -> None:
        self._epoch += 1
