"""Which watched tables changed, as PostgreSQL tells it (migration 0005: `fcl_changed`).

`ChangeListener` keeps one connection that LISTENs and counts a generation per table. A reader
that caches a view remembers the generations its data came from; when any moved, the view is
stale. While the connection is down nothing can be trusted: `healthy` is False and every
generation moves on reconnect."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
CHANNEL = "fcl_changed"


class ChangeListener:
    def __init__(self, url: str) -> None:
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.generations: defaultdict[str, int] = defaultdict(int)
        self.healthy = False
        self._task: asyncio.Task[None] | None = None
        self._epoch = 0  # moves on every (re)connect: invalidates everything

    def generation(self, tables: Sequence[str]) -> tuple[int, ...] | None:
        """The current generations of `tables`, or None when changes cannot be seen now."""
        if not self.healthy:
            return None
        return (self._epoch, *(self.generations[t] for t in tables))

    def _on_notify(self, _conn: object, _pid: int, _channel: str, table: str) -> None:
        self.generations[table] += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fcl-change-listener")

    async def _run(self) -> None:
        delay = 0.5
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn)
                await conn.add_listener(CHANNEL, self._on_notify)
                self._epoch += 1
                self.healthy = True
                delay = 0.5
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
                    await conn.execute("SELECT 1")  # notice a dead connection within a second
            except asyncio.CancelledError:
                self.healthy = False
                if conn is not None:
                    await conn.close()
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect; readers bypass the cache meanwhile
                log.warning("change listener: %s: %s; reconnecting in %.1fs", type(exc).__name__, exc, delay)
            self.healthy = False
            if conn is not None and not conn.is_closed():
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
