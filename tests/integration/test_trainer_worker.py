"""`fcl trainer` processes against the real PostgreSQL and Kafka: jobs train real models in
priority order, results are recorded in one transaction with their events, and the worker
survives SIGKILL, raising and hung trainers, cancellation and SIGTERM. Status events are read
back from the broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fcl.settings import Settings
from storage.db import Database
from storage.entities import NewSampleBatch, TriggerRequest
from storage.migrate import upgrade
from storage.repositories import JobRepository, QueueRepository, SampleRepository
from streams.admin import ensure_topics
from streams.topics import Topic
from tests.conftest import RunStack, create_database, drop_database
from tests.integration.streams_support import eventually, read_topic, rows, scalar
from trainers.simulator import FinCoachSimulator

FCL = str(Path(sys.executable).with_name("fcl"))


class Workers:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir, self.procs = env, workdir, []  # type: ignore[var-annotated]

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"trainer-{len(self.procs)}.log").open("ab")
        proc = subprocess.Popen([FCL, "trainer"], env={**self.env, **extra}, cwd=self.workdir, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        path = self.workdir / f"trainer-{len(self.procs) - 1}.log"
        while "ready" not in path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"trainer did not start:\n{self.logs()}")
            time.sleep(0.2)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-5000:] for p in sorted(self.workdir.glob("trainer-*.log")))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture
async def env(stack: RunStack, tmp_path: Path) -> AsyncIterator[tuple[Workers, Database, Settings]]:
    name = f"fcl_tw_{uuid.uuid4().hex[:10]}"
    url = await asyncio.to_thread(create_database, stack.server_url, name)
    await asyncio.to_thread(upgrade, url)
    prefix = f"fcl-tw-{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, database_url=url, topic_prefix=prefix,
                        artifact_dir=tmp_path / "artifacts", _env_file=None)  # type: ignore[call-arg]
    await ensure_topics(settings)
    environ = {**os.environ, "FCL_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FCL_DATABASE_URL": url,
               "FCL_TOPIC_PREFIX": prefix, "FCL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
               "FCL_HEARTBEAT_SECONDS": "0.5", "FCL_LEASE_SECONDS": "4", "FCL_RETRY_BASE_SECONDS": "0.2",
               "FCL_TRAINER_DEVICE": "cpu",
               "FCL_TRAINER_HYPERPARAMETERS": json.dumps({"goal": {"n_estimators": 20},
                                                          "segmentation": {"k_max": 5}})}
    workers = Workers(environ, tmp_path)
    db = Database(url, pool_size=2)
    try:
        yield workers, db, settings
    finally:
        workers.stop_all()
        await db.close()
        await asyncio.to_thread(drop_database, stack.server_url, name)


async def store(db: Database, dataset_id: str, model_type: str, samples: list[dict[str, Any]]) -> None:
    async with db.transaction() as s:
        await SampleRepository(s).ingest([NewSampleBatch(event_id=str(uuid.uuid4()), dataset_id=dataset_id,
                                                         model_type=model_type, samples=samples, occurred_at=None)],
                                         thresholds={model_type: 10**9})


async def trigger(db: Database, dataset_id: str, model_type: str, priority: int = 5, max_attempts: int = 3) -> uuid.UUID:
    async with db.transaction() as s:
        [a] = await JobRepository(s).admit([TriggerRequest(event_id=str(uuid.uuid4()), dataset_id=dataset_id,
                                                           model_type=model_type, priority=priority,
                                                           max_attempts=max_attempts)])
    return a.job_id


def transitions(events: list[dict[str, Any]], job_id: uuid.UUID) -> list[str]:
    """A job's status sequence as published, progress updates folded into their state."""
    out: list[str] = []
    for e in events:
        if e["job_id"] == str(job_id) and (not out or out[-1] != e["status"]):
            out.append(e["status"])
    return out


async def status_events(settings: Settings, until) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return await read_topic(settings, Topic.TRAINING_STATUS.full_name(settings.topic_prefix), until=until, timeout=60)


async def test_jobs_train_by_priority_and_each_result_is_recorded_with_its_events(env) -> None:  # type: ignore[no-untyped-def]
    workers, db, settings = env
    sim = FinCoachSimulator(seed=5, n_users=400)
    for name in ("low", "high", "mid"):
        await store(db, f"seg-{name}", "segmentation", sim.segmentation_samples())
    jobs = {name: await trigger(db, f"seg-{name}", "segmentation", priority)
            for name, priority in (("low", 1), ("high", 9), ("mid", 5))}
    workers.start()
    await eventually(lambda: scalar(db, "SELECT count(*) = 3 FROM training_jobs WHERE status = 'completed'"),
                     timeout=180, logs=workers.logs, what="3 jobs completed")
    started = [r.dataset_id for r in await rows(db, "SELECT dataset_id FROM training_events ORDER BY started_at")]
    assert started == ["seg-high", "seg-mid", "seg-low"]
    versions = await rows(db, "SELECT version, job_id, artifact_sha256, artifact_size FROM model_versions ORDER BY version")
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.job_id for v in versions] == [jobs["high"], jobs["mid"], jobs["low"]]
    for v in versions:  # artifacts are on disk with the recorded checksum
        path = await scalar(db, "SELECT artifact_path FROM model_versions WHERE version = :v", v=v.version)
        data = Path(path).read_bytes()
        import hashlib
        assert len(data) == v.artifact_size and hashlib.sha256(data).hexdigest() == v.artifact_sha256
    ledger = await rows(db, "SELECT version, previous_version FROM champion_ledger ORDER BY seq")
    assert ledger[0].version == 1 and ledger[0].previous_version is None
    assert all(b.previous_version == a.version for a, b in zip(ledger, ledger[1:]))
    checks = await scalar(db, "SELECT count(*) FROM validation_results")
    assert checks >= 3 * 2  # the first version on value checks; later ones on change checks too
    assert await scalar(db, "SELECT bool_and(samples_since_training = 0) FROM datasets")
    events = await status_events(settings, lambda r: sum(e["status"] == "completed" for e in r) >= 3)
    for job_id in jobs.values():
        assert transitions(events, job_id) == ["in_progress", "completed"] or \
            transitions(events, job_id) == ["queued", "in_progress", "completed"]
    validations = await read_topic(settings, Topic.TRAINING_VALIDATION.full_name(settings.topic_prefix),
                                   until=lambda r: len(r) >= 3, timeout=30)
    assert sorted(v["candidate_version"] for v in validations) == [1, 2, 3]
    assert all(len(v["checks"]) >= 2 for v in validations)
    moves = await read_topic(settings, Topic.MODEL_VERSIONS.full_name(settings.topic_prefix),
                             until=lambda r: len(r) >= len(ledger), timeout=30)
    assert [m["version"] for m in moves] == [r.version for r in ledger]
