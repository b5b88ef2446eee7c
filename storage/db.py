"""The connection: one async engine per process and sessions that are units of work.

`transaction()` is storage's boundary: any driver error raised inside it (or by its commit) leaves
as a `storage.errors.StorageError` whose `retriable` says whether to try again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from fcl.storage.errors import DRIVER_ERRORS, wrap

# The unit of work a `Database.transaction()` yields, which repositories and the queue work in.
UnitOfWork = AsyncSession


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    pre_ping: bool = True,
    server_settings: dict[str, str] | None = None,
) -> AsyncEngine:
    """An engine whose every connection asyncpg opens from the URL's libpq form, as the plain
    asyncpg connections do: `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and the rest of libpq's
    parameters in `FCL_DATABASE_URL` mean the same to every connection of fcl (SQLAlchemy's own
    asyncpg dialect would pass them on as keyword arguments asyncpg does not take)."""
    dsn = asyncpg_dsn(url)

    async def connect() -> Any:
        return await asyncpg.connect(dsn, server_settings=server_settings)

    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        async_creator=connect,
    )


def asyncpg_dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy URL, for plain asyncpg connections (LISTEN, the sample
    loader) and the engine's: the same host, credentials and TLS parameters."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Statement:
    """A statement with `:name` parameters made once into asyncpg's `$n` form, for `Database.row`:
    a hot path that is one statement, and so its own transaction, skips the session's BEGIN and
    COMMIT and the ORM's work around each statement (about 0.8 ms of a 1 ms claim)."""

    def __init__(self, sql: str) -> None:
        compiled = text(sql).compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())

    def args(self, params: Mapping[str, object]) -> tuple[object, ...]:
        return tuple(params[name] for name in self.names)


class Database:
    """Owns the engine; `transaction()` yields a session that commits on success.

    `pre_ping` tests each pooled connection before use (one round trip); callers that retry
    retriable errors anyway (the stream agents, the worker) turn it off for latency.
    `server_settings` are set on each connection (e.g. the agents' plan_cache_mode).
    `max_overflow` connections (default: as many as `pool_size`) are opened past the pool under
    load and closed when returned; 0 makes callers past the pool wait for a pooled connection."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int | None = None,
        pre_ping: bool = True,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.engine = create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pre_ping=pre_ping, server_settings=server_settings
        )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except DRIVER_ERRORS as exc:
            raise wrap(exc) from exc

    async def ping(self) -> None:
        """One round trip to the server; raises a StorageError when it cannot be reached."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except DRIVER_ERRORS as exc:
            raise wrap(exc) from exc

    @asynccontextmanager
    async def _plain(self) -> AsyncIterator[asyncpg.Connection]:
        """The plain asyncpg connection of a pooled connection. One that a failure left closed (the
        server restarted, the network dropped) is invalidated, so the pool opens a new one rather
        than handing the dead one out again: the session does this for the ORM's statements, and
        nothing would for a plain one."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            try:
                yield driver
            except BaseException as exc:
                if driver.is_closed():
                    await conn.invalidate(exc if isinstance(exc, Exception) else None)
                raise

    async def fetchrow(self, sql: str, *args: object) -> Any:
        """One row of a plain asyncpg statement (`$1` parameters, no ORM, no transaction) on a
        connection of this engine's pool: the read views share the process's one pool."""
        try:
            async with self._plain() as conn:
                return await conn.fetchrow(sql, *args)
        except DRIVER_ERRORS as exc:
            raise wrap(exc) from exc

    @asynccontextmanager
    async def plain_transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction on a plain asyncpg connection of this engine's pool (`$n` statements, no
        ORM session): for a hot path of a few statements; driver errors leave as StorageErrors."""
        try:
            async with self._plain() as conn, conn.transaction():
                yield conn
        except DRIVER_ERRORS as exc:
            raise wrap(exc) from exc

    async def row(self, statement: Statement, params: Mapping[str, object]) -> Any:
        """The first row of `statement` run on its own (one round trip, its own transaction), or
        None; jsonb comes back as its JSON text."""
        return await self.fetchrow(statement.sql, *statement.args(params))

    async def close(self) -> None:
        await self.engine.dispose()
