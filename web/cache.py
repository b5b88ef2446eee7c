"""Serialised responses of read-only views, kept until PostgreSQL says their tables changed.

An entry remembers the generations (storage.notifications.ChangeListener) of the tables it was read
from; a lookup returns it only while those generations stand. A response computed while a
change arrived is not stored. Without a healthy listener nothing is served from the cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

from storage.notifications import ChangeListener


class ResponseCache:
    def __init__(self, listener: ChangeListener | None, *, max_entries: int = 1024) -> None:
        self.listener = listener
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[tuple[int, ...], bytes]] = OrderedDict()
        self.hits = self.misses = 0

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
