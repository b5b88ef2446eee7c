"""Serialised responses of read-only views, kept until PostgreSQL says their tables changed.

An entry remembers the generations (storage.notifications.ChangeListener) of the tables it was read
from; a lookup returns it only while those generations stand. A response computed while a
change arrived is not stored. Without a healthy listener nothing is served from the cache.

A miss is single-flight: requests for the same key that miss while a read of it runs, at the same
generations, wait for that read instead of each reading PostgreSQL (a burst right after a write
costs one statement, not one per client). With the cache off (or no healthy listener), reads are
shared only as `FreshReads` shares them: never one that began before the request arrived."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from fcl.storage.notifications import ChangeListener

T = TypeVar("T")


def _retrieved(done: asyncio.Future[Any]) -> None:
    """Mark a shared read's error as seen: every waiter may have gone (a client hung up)."""
    if not done.cancelled():
        done.exception()


class FreshReads:
    """Reads that are never older than their request, shared by the requests that wait together.

    A request for a key that no read is running for starts one. A request that arrives while a
    read of its key runs does not take that read's answer (it began before the request arrived):
    it waits for the NEXT read of the key, which starts as soon as the running one ends and
    answers every request that arrived meanwhile. Each answer was read after its request arrived,
    as if each request read on its own, yet N requests at once cost about two statements, not N.
    The reads run as their own tasks: a client that goes away cancels nothing for the others."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._next: dict[Hashable, tuple[asyncio.Future[Any], Callable[[], Awaitable[Any]]]] = {}
        self.reads = self.shared = 0

    async def read(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        if key not in self._running:
            return await asyncio.shield(self._start(key, load))
        waiting = self._next.get(key)
        if waiting is None:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieved)
            waiting = self._next[key] = (future, load)
        self.shared += 1
        result: T = await asyncio.shield(waiting[0])
        return result

    def _start(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        self.reads += 1
        task = asyncio.ensure_future(load())
        self._running[key] = task

        def landed(done: asyncio.Future[Any]) -> None:
            _retrieved(done)
            del self._running[key]
            waiting = self._next.pop(key, None)
            if waiting is not None:  # the requests that arrived during this read: the next one
                future, next_load = waiting
                self._start(key, next_load).add_done_callback(lambda read: _settle(future, read))

        task.add_done_callback(landed)
        return task


def _settle(future: asyncio.Future[Any], read: asyncio.Future[Any]) -> None:
    if future.done():
        return
    if read.cancelled():
        future.cancel()
    elif (error := read.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(read.result())


class ResponseCache:
    def __init__(self, listener: ChangeListener | None, *, max_entries: int = 1024) -> None:
        self.fresh = FreshReads()
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
        off (no healthy listener) every request gets a read that began after it arrived."""
        if (hit := self.get(key, tables)) is not None:
            return hit
        read_at = self.generation(tables)
        if read_at is None:
            return await self.fresh.read(key, load)
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
