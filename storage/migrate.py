"""Alembic, driven from code (`fcl migrate`): no alembic.ini is needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from fcl.storage.errors import StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str = "base") -> None:
    _run(url, command.downgrade, revision)


def _run(url: str, action: Callable[[Config, str], None], revision: str) -> None:
    try:
        action(alembic_config(url), revision)
    except (OSError, SQLAlchemyError) as exc:
        where = make_url(url).render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StorageError(f"cannot migrate the database at {where}: {reason}", retriable=True) from exc


def head() -> str:
    """The revision the code expects (the newest migration)."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


async def schema_problem(url: str) -> str | None:
    """None when the database's schema is at head; otherwise one line saying what it is at and
    that `fcl migrate` is needed. StorageError (retriable) when the database cannot be reached."""
    from fcl.storage.db import Database

    db = Database(url, pool_size=1)
    try:
        async with db.transaction() as session:
            exists = await session.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
            current = await session.scalar(text("SELECT version_num FROM alembic_version")) if exists else None
    finally:
        await db.close()
    expected = head()
    if current == expected:
        return None
    where = make_url(url).render_as_string(hide_password=True)
    at = f"at revision {current}" if current else "not migrated (no schema)"
    return f"the database at {where} is {at}, not {expected}: run `fcl migrate` first"


async def at_head(url: str) -> bool:
    """Whether the database answers and its schema is at head (a readiness check)."""
    return await schema_problem(url) is None
