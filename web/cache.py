"""Serialised responses of read-only views, kept until PostgreSQL says their tables changed.

An entry remembers the generations (storage.notifications.ChangeListener) of the tables it was read
from; a lookup returns it only while those generations stand. A response computed while a
change arrived is not stored. Without a healthy listener nothing is served from the cache.

A miss is single-flight: requests for the same key that miss while a read of it runs, at the same
generations, wait for that read instead of each reading PostgreSQL (a burst right after a write
costs one statement, not one per client). With the cache off, every request reads."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence

from fcl.storage.notifications import ChangeListener


class ResponseCache:
    def __init__(self, listener: ChangeListener | None, *, max_entries: int = 1024) -> None:
        self.listener = listener
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[tuple[int, ...], bytes]] = OrderedDict()
        self._flights: dict[Hashable, tuple[tuple[int, ...], asyncio.Future[bytes]]] = {}
        self.hits = self.misses = self.joined = 0

    def generation(self, tables: Sequence[str]) -> tuple[int, ...] | None:
        return self.listener.generation(tables) if self.listener is not None else None

    def get(self, key: Hashable, tables: Sequence[str]) -> bytes | None:
        current = self.generation(tables)
        entry = self._entries.get(key)
        if current is None or entry is None or entry[0] != current:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, tables: Sequence[str], read_at: tuple[int, ...] | None, body: bytes) -> None:
        """Store `body`, read when the generations were `read_at`, unless they moved since."""
        if read_at is None or self.generation(tables) != read_at:
            return
        self._entries[key] = (read_at, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get_or_load(self, key: Hashable, tables: Sequence[str], load: Callable[[], Awaitable[bytes]]) -> bytes:
        """The cached body, or the body of the read of `key` already running at the current
        generations, or `load()`'s (stored when nothing changed meanwhile). The read runs as its
        own task, so a client that goes away does not cancel it for the others. With the cache
        off (no healthy listener) every request reads on its own."""
        if (hit := self.get(key, tables)) is not None:
            return hit
        read_at = self.generation(tables)
        if read_at is None:
            return await load()
        flight = self._flights.get(key)
        if flight is not None and flight[0] == read_at:
            self.joined += 1
            return await asyncio.shield(flight[1])
        task = asyncio.ensure_future(load())
        self._flights[key] = (read_at, task)

        def landed(done: asyncio.Future[bytes]) -> None:
            if self._flights.get(key, (None, None))[1] is done:
                del self._flights[key]
            if not done.cancelled() and done.exception() is None:
                self.put(key, tables, read_at, done.result())

        task.add_done_callback(landed)
        return await asyncio.shield(task)
