"""The streams part of `make demo`: a real `fcl streams` worker turns events into jobs.

Sends threshold events for the four model types (one repeated, one joining a waiting job), two
invalid events, and training samples that cross a dataset's threshold; then shows the jobs in
PostgreSQL and the status events and dead letters on Kafka. Trainers, the API and the simulator
join the demo with their issues (README, "Status").
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from fcl.settings import get_settings
from storage.db import Database
from storage.repositories import JobRepository
from streams.client import FclProducer
from streams.topics import Topic

ROOT = Path(__file__).resolve().parent.parent
FCL = str(Path(sys.executable).with_name("fcl"))
SEGMENT_THRESHOLD = 300


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


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FCL_THRESHOLD_SEGMENTATION": str(SEGMENT_THRESHOLD)}
    proc = subprocess.Popen([FCL, "streams"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while "Worker ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the streams worker did not start; its log:\n{log.read_text()[-3000:]}")
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
    finally:
        await db.close()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
