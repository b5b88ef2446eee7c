"""Migrations go up and down cleanly, and the migrated schema is exactly the models."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from fcl.storage.migrate import alembic_config, downgrade, upgrade
from fcl.storage.models import Base, is_sample_partition
from tests.conftest import RunStack, create_database, drop_database


@pytest.fixture
def empty_database(stack: RunStack):
    name = f"fcl_mig_{uuid.uuid4().hex[:10]}"
    url = create_database(stack.server_url, name)
    try:
        yield url
    finally:
        drop_database(stack.server_url, name)


def _tables(url: str) -> set[str]:
    async def fetch() -> set[str]:
        conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            rows = await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            )
            return {r["relname"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _schema_diff(url: str) -> list[Any]:
    """What autogenerate would still change: empty when migrations and models agree."""

    async def diff() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(
                            sync,
                            opts={
                                "include_object": lambda obj, name, type_, reflected, other: (
                                    not (type_ == "table" and reflected and is_sample_partition(name))
                                )
                            },
                        ),
                        Base.metadata,
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(diff())


def test_up_down_up(empty_database: str) -> None:
    expected = {t.name for t in Base.metadata.sorted_tables}
    upgrade(empty_database)
    assert _tables(empty_database) == expected | {"alembic_version"}
    assert _schema_diff(empty_database) == []

    downgrade(empty_database, "base")
    assert _tables(empty_database) == {"alembic_version"}

    upgrade(empty_database)
    assert _tables(empty_database) == expected | {"alembic_version"}
    assert _schema_diff(empty_database) == []


def test_head_is_the_initial_schema_and_upgrade_is_idempotent(empty_database: str) -> None:
    upgrade(empty_database)
    upgrade(empty_database)  # already at head: nothing to do, no error

    async def version() -> str:
        conn = await asyncpg.connect(
            make_url(empty_database).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
        finally:
            await conn.close()

    assert asyncio.run(version()) == ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
