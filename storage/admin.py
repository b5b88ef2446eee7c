"""Administration of a PostgreSQL server, for the local stack (`fcl stack`): does it answer, and
the service's database made when missing. The only SQL run outside a service's own database."""

from __future__ import annotations

import asyncpg


async def ensure_database(*, host: str, port: int, user: str, database: str) -> str:
    """Create `database` unless it exists; returns the server's version (`SHOW server_version`)."""
    conn = await asyncpg.connect(host=host, port=port, user=user, database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def server_version(*, host: str, port: int, user: str, timeout: float = 5.0) -> str | None:
    """The server's version string when it answers a real client, else None."""
    try:
        conn = await asyncpg.connect(host=host, port=port, user=user, database="postgres", timeout=timeout)
    except Exception:  # noqa: BLE001 - not answering is the answer
        return None
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


async def set_password(*, host: str, port: int, user: str, password: str) -> None:
    """Give `user` a password (stored as scram-sha-256, the server's default)."""
    conn = await asyncpg.connect(host=host, port=port, user=user, database="postgres")
    try:
        quoted = await conn.fetchval("SELECT quote_literal($1)", password)
        await conn.execute(f'ALTER ROLE "{user}" PASSWORD {quoted}')
    finally:
        await conn.close()
