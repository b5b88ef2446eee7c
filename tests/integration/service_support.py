"""The service as real processes (`fcl streams`, `fcl trainer`, `fcl web`) on a database and topic
prefix of their own, for tests that use it only from outside: Kafka, HTTP, a browser."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from fcl.contract.settings import Settings
from fcl.stack.common import free_port
from tests.conftest import RunStack, drop_database

FCL = str(Path(sys.executable).with_name("fcl"))
API = "/coaching/continuous-learning"
READY = {"streams": "Worker ready", "trainer": "ready", "web": "fcl web:"}


@dataclass
class Service:
    stack: RunStack
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = field(default_factory=free_port)
    prefix: str = field(default_factory=lambda: f"fcl-svc-{uuid.uuid4().hex[:8]}.")
    db_name: str = field(default_factory=lambda: f"fcl_svc_{uuid.uuid4().hex[:10]}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    database_url: str = ""

    def __post_init__(self) -> None:
        self.database_url = self.stack.migrated_database(self.db_name)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap=self.stack.kafka_bootstrap,
            database_url=self.database_url,
            topic_prefix=self.prefix,
            api_token=self.token,
            http_port=self.port,
            artifact_url=str(self.workdir / "artifacts"),
            _env_file=None,
        )

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
        return {
            **env,
            "FCL_KAFKA_BOOTSTRAP": self.stack.kafka_bootstrap,
            "FCL_DATABASE_URL": self.database_url,
            "FCL_TOPIC_PREFIX": self.prefix,
            "FCL_API_TOKEN": self.token,
            "FCL_HTTP_PORT": str(self.port),
            "FCL_ARTIFACT_URL": str(self.workdir / "artifacts"),
            "FCL_TOPIC_PARTITIONS": "2",
            **self.extra_env,
        }

    def start(self, *names: str, timeout: float = 120) -> None:
        for name in names:
            with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
                self.procs[name] = subprocess.Popen(
                    [FCL, name],
                    env=self.env,
                    cwd=self.workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        for name in names:
            log_path = self.workdir / f"{name}.log"
            while READY[name] not in log_path.read_text(errors="replace"):
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"fcl {name} did not start:\n{self.logs()}")
                time.sleep(0.2)
        if "web" in names:
            asyncio.run(self._wait_http())

    async def _wait_http(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(self.base_url + "/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"fcl web never became healthy:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.workdir.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        drop_database(self.stack.server_url, self.db_name)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def with_object_store(stack: RunStack, workdir: Path, *names: str) -> Iterator[Service]:
    """The service with its artifacts only in the stack's object store, under a prefix of its own
    (small goal trainings, no retrain sweep), `names` started; stopped at the end."""
    service = Service(
        stack,
        workdir,
        extra_env={
            **stack.artifact_env(f"test-{uuid.uuid4().hex[:10]}"),
            "FCL_TRAINER_HYPERPARAMETERS": '{"goal": {"n_estimators": 20}}',
            "FCL_RETRAIN_SWEEP_SECONDS": "0",
        },
    )
    try:
        service.start(*names)
        yield service
    finally:
        service.stop()


def dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


class EventLog:
    """Every event on the status, validation and model-versions topics from the beginning,
    collected in the background (a consumer without a group, as any outside reader)."""

    def __init__(self, settings: Settings) -> None:
        from fcl.contract.topics import Topic

        self.settings = settings
        self.names = {
            settings.topic(t.value): t.value
            for t in (Topic.TRAINING_STATUS, Topic.TRAINING_VALIDATION, Topic.MODEL_VERSIONS)
        }
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.headers: dict[str, dict[str, bytes]] = {}  # event_id -> the record's headers
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            *self.names,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=1000,
        )
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    event = json.loads(r.value)
                    self.events.append((self.names[r.topic], event))
                    self.headers[event["event_id"]] = dict(r.headers or ())

    def of(self, topic: str) -> list[dict[str, Any]]:
        seen: set[str] = set()
        out = []
        for t, e in self.events:
            if t == topic and e["event_id"] not in seen:  # at-least-once: drop repeats by event_id
                seen.add(e["event_id"])
                out.append(e)
        return out

    async def wait_for(self, what: str, check: Any, timeout: float = 300, logs: Any = lambda: "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            await asyncio.sleep(0.3)
        raise AssertionError(f"not seen within {timeout}s: {what}\n{logs()}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.consumer.stop()


async def train(svc: Service, db: Any, dataset_id: str, model_type: str, samples: Any) -> int:
    """Store `samples` in `dataset_id`, queue a job for it and wait until the service's trainer
    completed it; the version it recorded."""
    from tests import factories
    from tests.integration.streams_support import eventually, scalar

    await factories.store(db, dataset_id, model_type, samples)
    job = (await factories.admit(db, dataset_id, model_type, 5)).job_id
    await eventually(
        lambda: scalar(db, "SELECT status = 'completed' FROM training_jobs WHERE id = :j", j=job),
        timeout=180,
        logs=svc.logs,
        what=f"the {model_type} job on {dataset_id} completed",
    )
    return int(await scalar(db, "SELECT model_version FROM training_jobs WHERE id = :j", j=job))


async def make_champion(svc: Service, model_type: str, version: int) -> None:
    """Promote `version` by hand through the API unless it is the champion already (its gate
    promoted it)."""
    async with aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http:
        async with http.get(f"{API}/model-versions/{model_type}/champion") as r:
            if r.status == 200 and (await r.json())["version"] == version:
                return
        async with http.post(
            f"{API}/model-versions/{model_type}/{version}/promote", json={"reason": "the test serves it"}
        ) as r:
            assert r.status == 200, await r.text()
