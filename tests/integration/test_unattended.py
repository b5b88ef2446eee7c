"""Left running: samples keep streaming faster than a training takes, and retraining keeps going
with no trigger from anyone — `fcl streams` and `fcl trainer` as processes, the real broker and
database. (Once, a threshold's worth of samples arriving during a training left the counter above
the threshold with no crossing to come, and continuous learning stopped after one training.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from fcl.storage.db import Database
from fcl.trainers.simulator import simulate
from tests.conftest import RunStack
from tests.integration.service_support import Service, dumps

ENV = {
    "FCL_THRESHOLD_GOAL": "300",
    "FCL_RETRAIN_SWEEP_SECONDS": "0",  # the end of each training alone must keep it going
    "FCL_HEARTBEAT_SECONDS": "1",
    "FCL_TRAINER_HYPERPARAMETERS": json.dumps({"goal": {"n_estimators": 20}}),
}


async def test_samples_streaming_faster_than_training_keep_retraining_going_without_any_trigger(
    stack: RunStack, tmp_path: Path
) -> None:
    svc = await asyncio.to_thread(Service, stack, tmp_path, dict(ENV))
    db = Database(svc.database_url, pool_size=2)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    try:
        await asyncio.to_thread(svc.start, "streams", "trainer")
        await producer.start()
        samples = list(simulate("goal", seed=3, users=20_000))
        topic = svc.settings.topic("training-samples")
        done = False
        sent = 0
        async with asyncio.timeout(300):
            while not done:
                # 100 samples every 0.1 s: a threshold's worth (300) every 0.3 s, well within one
                # training, so a training ends with its counter still above the threshold
                chunk = samples[sent % len(samples) : sent % len(samples) + 100]
                event = {"event_id": str(uuid.uuid4()), "dataset_id": "steady", "model_type": "goal", "samples": chunk}
                await producer.send_and_wait(topic, dumps(event), key=b"steady")
                sent += len(chunk)
                await asyncio.sleep(0.1)
                async with db.transaction() as s:
                    completed = int(
                        await s.scalar(text("SELECT count(*) FROM training_jobs WHERE status = 'completed'")) or 0
                    )
                    # a job queued by the end of the training before it (no crossing: the counter
                    # never went below the threshold) that completed too
                    after_training = int(
                        await s.scalar(
                            text("""
                        SELECT count(*) FROM training_jobs j JOIN job_triggers t ON t.job_id = j.id
                        WHERE j.status = 'completed' AND t.event_id LIKE 'ready:steady:%'
                    """)
                        )
                        or 0
                    )
                done = completed >= 3 and after_training >= 1
                for name, proc in svc.procs.items():
                    assert proc.poll() is None, f"fcl {name} died:\n{svc.logs()}"
        async with db.transaction() as s:
            statuses = [r[0] for r in (await s.execute(text("SELECT status FROM training_jobs"))).all()]
        assert statuses.count("completed") >= 3 and "failed" not in statuses, statuses
    finally:
        await producer.stop()
        await db.close()
        await asyncio.to_thread(svc.stop)
