"""What the benchmarks share: the local stack's settings, scratch databases, percentiles, the
median (min-max) of repeated runs, and the smallest completed training a worker records."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import make_url

from fcl.contract.enums import CheckKind, Direction
from fcl.contract.events import ValidationCheck
from fcl.contract.settings import Settings, load_settings
from fcl.stack import LocalStack
from fcl.storage.entities import Candidate, CompletedAttempt, StoredArtifactRef

ROOT = Path(__file__).resolve().parent.parent


def stack_settings() -> Settings:
    """The settings of the local stack `make bench` started (its .fcl/stack.env)."""
    return load_settings(env_file=LocalStack(ROOT / ".fcl").env_file)


def dsn(url: str) -> str:
    """A SQLAlchemy URL as a plain PostgreSQL DSN for asyncpg or psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def spread(values: list[float], digits: int = 0) -> str:
    """The median of repeated runs with their minimum and maximum: `median (min-max)`."""
    f = f"{{:,.{digits}f}}"
    return f"{f.format(statistics.median(values))} ({f.format(min(values))}-{f.format(max(values))})"


def completed_attempt(*, passed: bool, validated_against: int = 0) -> CompletedAttempt:
    """The smallest result a job completes with: one check (passing or not) and no real artifact."""
    return CompletedAttempt(
        started_at=datetime.now(UTC),
        duration_seconds=0.0,
        dataset_watermark=0,
        validated_against=validated_against,
        candidate=Candidate(
            fit_seconds=0.0,
            sample_count=0,
            metrics={"x": 0.9} if passed else {},
            baseline_metrics=None,
            passed=passed,
            hyperparameters={},
            dataset_hash="-",
            seed=0,
            library_versions={},
            code_version="bench",
            checks=(
                ValidationCheck(
                    metric="x",
                    kind=CheckKind.VALUE,
                    value=0.9 if passed else None,
                    baseline=None,
                    threshold=0.0,
                    direction=Direction.HIGHER_IS_BETTER,
                    passed=passed,
                ),
            ),
            artifact=StoredArtifactRef(path=f"/bench/{uuid.uuid4()}", sha256="0" * 64, size=0, format="skops"),
        ),
    )


class ScratchDatabases:
    """Databases a benchmark creates on the stack's server and drops when it is done."""

    def __init__(self, settings: Settings) -> None:
        self.server_url = make_url(settings.database_url).set(database="postgres").render_as_string(hide_password=False)
        self.names: list[str] = []

    async def create(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(dsn(self.server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.names.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(dsn(self.server_url))
        try:
            for name in self.names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic under `prefix` (a benchmark's own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()
