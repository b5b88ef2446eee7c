"""The connection: one async engine per process and sessions that are units of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


class StorageError(Exception):
    """The database could not be reached or refused an operation; `retriable` says whether
    trying again later can help (a server that is down) or not (a constraint that is broken)."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def create_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping)


class Database:
    """Owns the engine; `transaction()` yields a session that commits on success.

    `pre_ping` tests each pooled connection before use (one round trip); callers that retry
    on `is_retriable` errors anyway (the stream agents) turn it off for latency."""

    def __init__(self, url: str, *, pool_size: int = 10, pre_ping: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, pre_ping=pre_ping)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        """One round trip to the server; raises when it cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


# SQLSTATE classes worth waiting out: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown, cannot connect now).
_RETRIABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def is_retriable(exc: BaseException) -> bool:
    """True when the same database work may succeed later (server down or restarting, a
    deadlock, a dropped connection); False for errors the data itself causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, ConnectionError, TimeoutError)):
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _RETRIABLE_SQLSTATE_CLASSES:
            return True
        name = type(current).__name__
        if name in (
            "InterfaceError",
            "ConnectionDoesNotExistError",
            "InternalClientError",
            "CannotConnectNowError",
            "ConnectionFailureError",
        ):
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False
