"""Test session set-up.

Integration tests run against the real broker and database: the session starts the local stack
when it is not running (or uses FCL_KAFKA_BOOTSTRAP and FCL_DATABASE_URL when both are given),
migrates a template database once, and clones it (`CREATE DATABASE ... TEMPLATE`) for the run's
database and for every test that needs a database of its own; it picks a unique topic prefix.
What the session started, it stops; what it created, it drops.

`make test` runs the tests in parallel (pytest-xdist, `-n`): the controlling process starts the
stack before the workers start and stops it after they end; each worker is a session of its own,
with its own database and topic prefix, on that one stack. Tests that share an expensive
fixture stay on one worker (`xdist_group`, with `--dist loadgroup`), and such fixtures are
session-scoped: the worker may run other modules between their tests, which would tear down and
rebuild a module-scoped one (the CQL champion was trained twice that way).
"""

from __future__ import annotations

import asyncio
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share 2 cores: one math thread per process (and per service it starts),
    # or the BLAS, OpenMP and torch thread pools of every worker spin against each other.
    # (LOKY_MAX_CPU_COUNT is joblib's: scikit-learn's n_jobs=-1 then means one.)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LOKY_MAX_CPU_COUNT"):
        os.environ.setdefault(_var, "1")
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from fcl.contract.settings import Settings, load_settings
from fcl.stack import LocalStack
from fcl.storage.artifacts import ArtifactStore, S3Access
from fcl.storage.db import Database, asyncpg_dsn
from fcl.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class RunStack:
    kafka_bootstrap: str
    database_url: str  # this run's own database, migrated to head
    server_url: str  # the same server's maintenance database, for creating more databases
    template: str  # a database migrated to head, cloned for every migrated database a test needs
    topic_prefix: str
    # The stack's S3-compatible object store as environment variables (FCL_S3_ENDPOINT_URL, AWS_*),
    # empty when the suite runs against a stack that has none.
    object_store: dict[str, str]

    def artifact_env(self, prefix: str) -> dict[str, str]:
        """Environment for services whose artifacts go to s3://<bucket>/<prefix> on the stack's store
        (skips the test when the stack has no object store)."""
        if not self.object_store:
            pytest.skip("the stack given by FCL_KAFKA_BOOTSTRAP/FCL_DATABASE_URL has no FCL_S3_ENDPOINT_URL")
        bucket = self.object_store["FCL_ARTIFACT_URL"].removeprefix("s3://").split("/")[0]
        return {**self.object_store, "FCL_ARTIFACT_URL": f"s3://{bucket}/{prefix}"}

    def artifact_store(self, prefix: str) -> ArtifactStore:
        """A client of the stack's object store under s3://<bucket>/<prefix>, as a service sees it."""
        return store_from_env(self.artifact_env(prefix))

    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap=self.kafka_bootstrap,
            database_url=self.database_url,
            topic_prefix=self.topic_prefix,
            _env_file=None,
        )

    def migrated_database(self, name: str) -> str:
        """A new database at head, cloned from the template (no migration runs)."""
        return create_database(self.server_url, name, template=self.template)


async def _create_database(server_url: str, name: str, template: str | None) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def store_from_env(env: dict[str, str]) -> ArtifactStore:
    """The artifact store an `fcl` process with this environment writes to."""
    return ArtifactStore(
        env["FCL_ARTIFACT_URL"],
        S3Access(
            endpoint=env.get("FCL_S3_ENDPOINT_URL"),
            access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            region=env.get("AWS_REGION"),
        ),
    )


def create_database(server_url: str, name: str, *, template: str | None = None) -> str:
    asyncio.run(_create_database(server_url, name, template))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    asyncio.run(_drop_database(server_url, name))


# JVM options of the Kafka brokers a test starts and throws away (a second stack, a cluster): the
# C1 compiler only and the serial collector cut the CPU a broker takes to answer (bench/bench_stack.py
# on the 2-CPU VM: 4.3 s to 2.6 s for one node, 14.5 s to 8.8 s for three). The suite's own stack
# keeps the default JIT: it carries every test's traffic.
QUICK_KAFKA = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

_STARTED: list[LocalStack] = []  # the stack the controlling process started for its workers


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist the controlling process starts the stack once, before any worker runs (each
    worker would otherwise race to start it, and the first to finish would stop it under the
    others)."""
    parallel = getattr(config.option, "numprocesses", None) not in (None, 0)
    if hasattr(config, "workerinput") or not parallel:
        return
    if os.environ.get("FCL_KAFKA_BOOTSTRAP") and os.environ.get("FCL_DATABASE_URL"):
        return
    local = LocalStack(ROOT / ".fcl")
    if not local.status().up:
        local.up()
        _STARTED.append(local)


def pytest_unconfigure(config: pytest.Config) -> None:
    for local in _STARTED:
        if not os.environ.get("FCL_KEEP_STACK"):
            local.down()
    _STARTED.clear()


@pytest.fixture(scope="session")
def stack() -> Iterator[RunStack]:
    started: LocalStack | None = None
    if os.environ.get("FCL_KAFKA_BOOTSTRAP") and os.environ.get("FCL_DATABASE_URL"):
        settings = load_settings(env_file=None)
    else:
        local = LocalStack(ROOT / ".fcl")
        if not local.status().up:
            local.up()
            started = local
        settings = load_settings(env_file=local.env_file)
    run_id = uuid.uuid4().hex[:10]
    server_url = make_url(settings.database_url).set(database="postgres").render_as_string(hide_password=False)
    template, db_name = f"fcl_template_{run_id}", f"fcl_test_{run_id}"
    upgrade(create_database(server_url, template))
    database_url = create_database(server_url, db_name, template=template)
    info = RunStack(
        kafka_bootstrap=settings.kafka_bootstrap,
        database_url=database_url,
        server_url=server_url,
        template=template,
        topic_prefix=f"fcl-test-{run_id}.",
        object_store=(
            {
                "FCL_ARTIFACT_URL": settings.artifact_location,
                "FCL_S3_ENDPOINT_URL": settings.s3_endpoint_url,
                "AWS_ACCESS_KEY_ID": settings.aws_access_key_id or "",
                "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key or "",
                "AWS_REGION": settings.aws_region or "us-east-1",
            }
            if settings.s3_endpoint_url and settings.artifact_location.startswith("s3://")
            else {}
        ),
    )
    saved = {k: os.environ.get(k) for k in ("FCL_KAFKA_BOOTSTRAP", "FCL_DATABASE_URL", "FCL_TOPIC_PREFIX")}
    # Subprocesses started by tests (fcl commands, workers) see this run's stack.
    os.environ.update(
        FCL_KAFKA_BOOTSTRAP=info.kafka_bootstrap, FCL_DATABASE_URL=info.database_url, FCL_TOPIC_PREFIX=info.topic_prefix
    )
    try:
        yield info
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        drop_database(server_url, db_name)
        drop_database(server_url, template)
        if started is not None and not os.environ.get("FCL_KEEP_STACK"):
            started.down()


@pytest.fixture
async def db(stack: RunStack) -> AsyncIterator[Database]:
    database = Database(stack.database_url, pool_size=4)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def own_db(stack: RunStack) -> AsyncIterator[Database]:
    """A database of the test's own (migrated), for checks that look at the whole queue."""
    name = f"fcl_q_{uuid.uuid4().hex[:10]}"
    url = await asyncio.to_thread(stack.migrated_database, name)
    database = Database(url, pool_size=4)
    try:
        yield database
    finally:
        await database.close()
        await asyncio.to_thread(drop_database, stack.server_url, name)


# The longest tests (about 15 s and more alone, measured with --durations) start first, so that
# parallel workers do not end on one of them while the others wait.
LONGEST = (
    "test_end_to_end.py",
    "test_kafka_cluster.py",
    "test_trainers.py",
    "test_multi_machine.py",
    "rolling_restart",
    "sigkill",
    "test_second_stack",
    "test_serving.py",
    "test_operator_cli.py",
    "postgres_outage",
    "test_goal.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/integration talks to the real broker or database.
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: not any(part in item.nodeid for part in LONGEST))
