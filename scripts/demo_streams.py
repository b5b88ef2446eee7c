"""`make demo` after the stack is up: a real `fcl streams` worker and a real `fcl trainer`.

Part 1 sends threshold events for the four model types (one repeated, one joining a waiting job),
two invalid events, and samples that cross a dataset's threshold; it shows the jobs in PostgreSQL
and the status events and dead letters on Kafka. Part 2 feeds simulated FinCoach data for all four
model types; their thresholds are crossed, the trainer trains, validates and versions each model,
and a second round of goal data is judged against its champion. The API and dashboard join the
demo with their issue (README, "Status").
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from fcl.settings import get_settings
from storage.db import Database
from storage.repositories import JobRepository
from streams.client import FclProducer
from streams.topics import Topic

ROOT = Path(__file__).resolve().parent.parent
FCL = str(Path(sys.executable).with_name("fcl"))
SEGMENT_THRESHOLD = 300
# Demo-sized thresholds and trainings, so that everything happens within a minute or two.
DEMO_ENV = {"FCL_THRESHOLD_SEGMENTATION": str(SEGMENT_THRESHOLD), "FCL_THRESHOLD_GOAL": "500",
            "FCL_THRESHOLD_SPENDING": "8000", "FCL_THRESHOLD_RECOMMENDATION": "15000",
            "FCL_TRAINER_HYPERPARAMETERS": json.dumps({
                "recommendation": {"steps": 4000, "fqe_steps": 2000},
                "spending": {"max_epochs": 4, "steps_per_epoch": 60, "hidden": 32},
                "goal": {"n_estimators": 100}})}
KEY_METRIC = {"recommendation": "fqe_value", "segmentation": "silhouette", "spending": "relative_mae_seasonal_naive",
              "goal": "roc_auc"}


async def read_topic(bootstrap: str, topic: str, *, until, timeout: float) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every JSON record on `topic` from the start, until `until(records)` or `timeout` seconds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(records):
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(json.loads(r.value) for r in batch)
    finally:
        await consumer.stop()
    return records


def start_worker(log: Path, command: str = "streams", ready: str = "Worker ready") -> subprocess.Popen[bytes]:
    env = {**os.environ, **DEMO_ENV}
    proc = subprocess.Popen([FCL, command], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {command} worker did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


async def main() -> None:
    settings = get_settings()
    run = time.strftime("%H%M%S")
    log_dir = ROOT / ".fcl" / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting a streams worker (log: {log_dir / 'streams.log'}) ...")
    worker = start_worker(log_dir / "streams.log")
    db = Database(settings.database_url, pool_size=2)
    try:
        async with FclProducer(settings) as producer:
            sent = []
            for model_type, priority in (("recommendation", 7), ("segmentation", 3), ("spending", 5), ("goal", 9)):
                sent.append(await producer.send_threshold(f"demo-{run}-{model_type}", model_type, priority=priority))
            # a redelivery of the same event: no second job
            await producer.send_event(Topic.DATASET_THRESHOLD, sent[0]["dataset_id"], sent[0])
            # a second trigger while the first job waits: joins it and raises its priority
            await producer.send_threshold(sent[2]["dataset_id"], "spending", priority=8)
            rng = random.Random(7)
            dataset = f"demo-{run}-segments"
            for batch in range(4):
                await producer.send_samples(dataset, "segmentation", [
                    {"user_id": f"user-{batch * 100 + i}",
                     "features": {"monthly_spend": rng.uniform(200, 3000), "savings_rate": rng.uniform(0, 0.4)}}
                    for i in range(100)])
        raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await raw.start()
        try:
            topic = Topic.DATASET_THRESHOLD.full_name(settings.topic_prefix)
            await raw.send_and_wait(topic, b"{not json", key=b"demo")
            await raw.send_and_wait(topic, b'{"event_id": "demo-bad", "dataset_id": "x", "model_type": "goal", '
                                           b'"priority": 12}', key=b"demo")
        finally:
            await raw.stop()
        print(f"sent: 4 threshold events, 1 repeat, 1 joining trigger, 400 segmentation samples "
              f"(threshold {SEGMENT_THRESHOLD}), 2 invalid events\n")

        deadline = time.monotonic() + 30
        jobs = []
        while time.monotonic() < deadline:
            async with db.transaction() as s:
                jobs = [j for j in await JobRepository(s).recent(limit=50) if j.dataset_id.startswith(f"demo-{run}-")]
            if len(jobs) >= 5:
                break
            await asyncio.sleep(0.5)
        print(f"{'job':<10} {'dataset':<32} {'model type':<15} {'priority':>8}  {'status':<8} triggers")
        for j in sorted(jobs, key=lambda j: (-j.priority, j.created_at)):
            print(f"{str(j.id)[:8]:<10} {j.dataset_id:<32} {j.model_type:<15} {j.priority:>8}  "
                  f"{j.status.value:<8} {len(j.trigger_event_ids)}")
        ids = {str(j.id) for j in jobs}
        statuses = await read_topic(settings.kafka_bootstrap, Topic.TRAINING_STATUS.full_name(settings.topic_prefix),
                                    until=lambda r: ids <= {s.get("job_id") for s in r}, timeout=20)
        mine = [s for s in statuses if s.get("job_id") in ids]
        print(f"\n`queued` status events on {Topic.TRAINING_STATUS.full_name(settings.topic_prefix)}: {len(mine)}")
        letters = await read_topic(settings.kafka_bootstrap, Topic.DEAD_LETTER.full_name(settings.topic_prefix),
                                   until=lambda r: False, timeout=2)
        print(f"dead letters on {Topic.DEAD_LETTER.full_name(settings.topic_prefix)} (latest 2):")
        for letter in letters[-2:]:
            print(f"  - {letter['reason']}")
        await train(settings, db, run, log_dir, jobs)
    finally:
        await db.close()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


async def wait_versions(db: Database, run: str, count: int, timeout: float = 300) -> list[Any]:
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while True:
        async with db.transaction() as s:
            rows = (await s.execute(text("""
                SELECT m.model_type, m.version, m.dataset_id, m.metrics, e.validation_passed, e.promoted,
                       e.fit_seconds, e.id AS training_event_id, m.parent_version
                FROM model_versions m JOIN training_events e ON e.id = m.training_event_id
                WHERE m.dataset_id LIKE :prefix ORDER BY m.created_at"""), {"prefix": f"fincoach-{run}-%"})).all()
        if len(rows) >= count or time.monotonic() > deadline:
            return list(rows)
        await asyncio.sleep(1.0)


async def train(settings: Any, db: Database, run: str, log_dir: Path, sampleless: list[Any]) -> None:
    from storage.repositories import QueueRepository, ValidationRepository
    from trainers.simulator import simulate

    async with db.transaction() as s:
        for job in sampleless:  # part 1's threshold-only datasets hold no samples to train on
            await QueueRepository(s).cancel(job.id)
    print(f"\ncancelled the {len(sampleless)} part-1 jobs (made-up data) before the real FinCoach data arrives")
    print(f"starting a trainer worker (log: {log_dir / 'trainer.log'}) ...")
    trainer = start_worker(log_dir / "trainer.log", "trainer", "ready")
    try:
        plan = {"segmentation": dict(users=600), "goal": dict(users=300), "spending": dict(users=60, days=150),
                "recommendation": dict(users=500, episodes=2000)}
        async with FclProducer(settings, linger_ms=5) as producer:
            for model_type, size in plan.items():
                samples = list(simulate(model_type, seed=1, **size))
                for i in range(0, len(samples), 500):
                    await producer.send_samples(f"fincoach-{run}-{model_type}", model_type, samples[i:i + 500], wait=False)
                print(f"sent {len(samples)} simulated {model_type} samples to dataset fincoach-{run}-{model_type}")
        print("waiting for the four models to train, validate and be versioned ...")
        rows = await wait_versions(db, run, 4)
        print(f"\n{'model type':<15} {'version':>7}  {'champion':>8}  {'promoted':<8} {'key metric':<36} {'train s':>7}  failed checks")
        for r in rows:
            key = KEY_METRIC[r.model_type]
            async with db.transaction() as s:
                failed = [f"{c.metric} ({c.kind})" for c in await ValidationRepository(s).for_training_event(r.training_event_id)
                          if not c.passed]
            print(f"{r.model_type:<15} {r.version:>7}  {str(r.parent_version or '-'):>8}  {str(r.promoted):<8} "
                  f"{key + ' ' + format(r.metrics.get(key, float('nan')), '.3f'):<36} {r.fit_seconds:>7.1f}  "
                  f"{', '.join(failed) or '-'}")
        print("\na second round of goal data (new users): the candidate is judged against its champion")
        async with FclProducer(settings, linger_ms=5) as producer:
            samples = list(simulate("goal", seed=2, users=300))
            for i in range(0, len(samples), 500):
                await producer.send_samples(f"fincoach-{run}-goal", "goal", samples[i:i + 500], wait=False)
        rows = await wait_versions(db, run, 5, timeout=120)
        if len(rows) >= 5:
            retrain = rows[-1]
            async with db.transaction() as s:
                checks = await ValidationRepository(s).for_training_event(retrain.training_event_id)
            print(f"goal version {retrain.version} against champion version {retrain.parent_version}: "
                  f"{'promoted' if retrain.promoted else 'not promoted'}")
            for c in checks:
                base = f" (champion {c.baseline:.4f})" if c.baseline is not None else ""
                value = "missing" if c.value is None else f"{c.value:.4f}"
                print(f"  {'pass' if c.passed else 'FAIL'}  {c.kind:<6} {c.metric:<26} {value}{base}  "
                      f"{c.direction.value} {c.threshold}")
    finally:
        os.killpg(trainer.pid, signal.SIGTERM)
        trainer.wait(timeout=60)


if __name__ == "__main__":
    asyncio.run(main())
