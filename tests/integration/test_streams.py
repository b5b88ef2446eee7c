"""The streams worker against the real broker and database: triggers become exactly one job
each, invalid events become dead letters with their reason, samples crossing a threshold make
one threshold event and one job per crossing, and crashes or a database outage lose nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from jsonschema import Draft202012Validator

from fcl.contract.events import threshold_event_id
from fcl.contract.schemas import SCHEMA_DIR
from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.client import FclProducer
from fcl.storage.datasets import DatasetRepository, SampleRepository
from fcl.storage.db import Database
from fcl.storage.jobs import JobRepository
from tests import factories
from tests.conftest import RunStack, drop_database
from tests.factories import claim
from tests.integration.streams_support import (
    StreamsEnv,
    create_topics,
    encode,
    eventually,
    new_prefix,
    produce_raw,
    read_topic,
    rows,
    scalar,
)
from tests.poison import COMMON
from tests.poison import SAMPLES as POISON_SAMPLES
from tests.poison import THRESHOLD as POISON_THRESHOLD

MAX_EVENT_BYTES = 4096


@pytest.fixture
async def streams(
    stack: RunStack, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[StreamsEnv, Database]]:
    max_event_bytes = getattr(request, "param", MAX_EVENT_BYTES)  # a test may ask for another limit
    name = f"fcl_st_{uuid.uuid4().hex[:10]}"
    url = await asyncio.to_thread(stack.migrated_database, name)
    prefix = new_prefix()
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=url,
        topic_prefix=prefix,
        max_event_bytes=max_event_bytes,
        thresholds={"segmentation": 50},
        _env_file=None,
    )
    env = {
        **os.environ,
        "FCL_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "FCL_DATABASE_URL": url,
        "FCL_TOPIC_PREFIX": prefix,
        "FCL_MAX_EVENT_BYTES": str(max_event_bytes),
        "FCL_THRESHOLD_SEGMENTATION": "50",
    }
    await create_topics(settings)
    senv = StreamsEnv(settings=settings, env=env, workdir=tmp_path)
    db = Database(url, pool_size=2)
    try:
        yield senv, db
    finally:
        senv.stop_all()
        await db.close()
        await asyncio.to_thread(drop_database, stack.server_url, name)


def assert_schema(topic: Topic, records: list[dict[str, Any]]) -> None:
    validator = Draft202012Validator(json.loads((SCHEMA_DIR / f"{topic.value}.schema.json").read_text()))
    for record in records:
        event = {k: v for k, v in record.items() if not k.startswith("_")}
        errors = [e.message for e in validator.iter_errors(event)]
        assert not errors, (event, errors)


def threshold(dataset_id: str, model_type: str = "goal", priority: int | None = 5, **extra: object) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "dataset_id": dataset_id,
        "model_type": model_type,
        "sample_count": 100,
        "threshold": 100,
        "occurred_at": "2026-11-26T10:00:00Z",
        **extra,
    }
    if priority is not None:
        event["priority"] = priority
    return event


async def test_triggers_become_one_job_each_and_bad_events_dead_letters(streams) -> None:
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    n = 30
    valid = [
        threshold(f"ds-{i}", ["goal", "spending", "segmentation", "recommendation"][i % 4], priority=i % 10)
        for i in range(n)
    ]
    duplicates = valid[:10]  # redelivered: same event ids
    no_priority = threshold("ds-default", priority=None)
    bad = {
        "not valid JSON": b'{"event_id": "x", "dataset_id": ',
        "dataset_id: Field required": encode({"event_id": "e-no-dataset", "model_type": "goal"}),
        "unknown model type": encode(threshold("ds-bad-type", model_type="fraud")),
        "priority 12 outside 0-9": encode(threshold("ds-bad-priority", priority=12)),
        "exceeds FCL_MAX_EVENT_BYTES": encode(threshold("ds-big", padding="x" * (MAX_EVENT_BYTES + 10))),
        "expected a JSON object": b"[1, 2, 3]",
        # an id of the kind fcl makes for its retraining sweep, sent ahead of time
        "made by fcl itself": encode(threshold("ds-0", event_id="ready:ds-0:1000")),
        # a dataset that holds goal samples asked to train as a spending model
        "holds goal samples, not spending": encode(threshold("ds-goal-data", model_type="spending")),
    }
    await factories.store(db, "ds-goal-data", "goal", count=3)
    items = [(e["dataset_id"].encode(), encode(e)) for e in valid + duplicates + [no_priority]]
    items += [(b"bad", value) for value in bad.values()]
    await produce_raw(senv.settings, senv.topic(Topic.DATASET_THRESHOLD), items)

    await eventually(
        lambda: scalar(db, "SELECT count(*) = :n FROM training_jobs", n=n + 1), what=f"{n + 1} jobs", logs=senv.logs
    )
    letters = await read_topic(senv.settings, senv.topic(Topic.DEAD_LETTER), until=lambda r: len(r) >= len(bad))
    statuses = await read_topic(senv.settings, senv.topic(Topic.TRAINING_STATUS), until=lambda r: len(r) >= n + 1)

    assert await scalar(db, "SELECT count(*) FROM training_jobs") == n + 1
    assert await scalar(db, "SELECT count(*) FROM job_triggers") == n + 1
    jobs = {
        r.dataset_id: r
        for r in await rows(db, "SELECT id, dataset_id, model_type, priority, status FROM training_jobs")
    }
    for e in valid:
        job = jobs[e["dataset_id"]]
        assert (job.model_type, job.priority, job.status) == (e["model_type"], e["priority"], "queued")
    assert jobs["ds-default"].priority == 5  # priority is optional, 5 by default

    assert len(statuses) == n + 1
    assert {s["job_id"] for s in statuses} == {str(j.id) for j in jobs.values()}
    assert all(s["status"] == "queued" and s["attempt"] == 1 and s["_key"] == s["job_id"] for s in statuses)
    assert len({s["event_id"] for s in statuses}) == n + 1

    assert len(letters) == len(bad)
    reasons = [letter["reason"] for letter in letters]
    for fragment in bad:
        assert sum(fragment in r for r in reasons) == 1, (fragment, reasons)
    assert {letter["source_topic"] for letter in letters} == {senv.topic(Topic.DATASET_THRESHOLD)}
    assert all(letter["key"] == "bad" and letter["_key"] == "bad" for letter in letters)
    assert any(letter["value"] == '{"event_id": "x", "dataset_id": ' for letter in letters)
    assert len({(letter["partition"], letter["offset"]) for letter in letters}) == len(bad)
    # What reached the broker has the documented shape.
    assert_schema(Topic.TRAINING_STATUS, statuses)
    assert_schema(Topic.DEAD_LETTER, letters)


async def test_admission_joins_waiting_jobs_and_queues_one_follow_up(streams) -> None:
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    topic = senv.topic(Topic.DATASET_THRESHOLD)
    first, joiner = threshold("reco", "recommendation", priority=2), threshold("reco", "recommendation", priority=8)
    await produce_raw(senv.settings, topic, [(b"reco", encode(first)), (b"reco", encode(joiner))])
    await eventually(lambda: scalar(db, "SELECT count(*) = 2 FROM job_triggers"), logs=senv.logs)
    (job,) = await rows(db, "SELECT id, priority FROM training_jobs")
    assert job.priority == 8  # the higher of the two
    async with db.transaction() as s:
        got = await JobRepository(s).get(job.id)
    assert got is not None and set(got.trigger_event_ids) == {first["event_id"], joiner["event_id"]}

    # The job starts running: the next trigger queues a follow-up, the one after joins it.
    claimed = await claim(db, "test")
    assert claimed is not None and claimed.id == job.id
    await produce_raw(
        senv.settings,
        topic,
        [
            (b"reco", encode(threshold("reco", "recommendation", priority=3))),
            (b"reco", encode(threshold("reco", "recommendation", priority=4))),
        ],
    )
    await eventually(lambda: scalar(db, "SELECT count(*) = 4 FROM job_triggers"), logs=senv.logs)
    states = sorted((r.status, r.priority) for r in await rows(db, "SELECT status, priority FROM training_jobs"))
    assert states == [("in_progress", 8), ("queued", 4)]
    statuses = await read_topic(senv.settings, senv.topic(Topic.TRAINING_STATUS), until=lambda r: len(r) >= 3)
    # one `queued` per job, none for the joins (and the claim's `in_progress`)
    assert sorted(e["status"] for e in statuses) == ["in_progress", "queued", "queued"]


def samples_event(
    dataset_id: str, n: int, model_type: str = "segmentation", event_id: str | None = None
) -> dict[str, Any]:
    samples = [{"user_id": f"u{i}", "features": {"spend": float(i), "savings": float(i % 7)}} for i in range(n)]
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "dataset_id": dataset_id,
        "model_type": model_type,
        "occurred_at": "2026-11-26T10:00:00Z",
        "samples": samples,
    }


async def test_a_refused_input_is_kept_whole_and_replayed_through_the_same_door_once_fixed(streams) -> None:
    """A producer's new release sends samples of another shape: they are dead-lettered (a bounded
    letter on the topic) and kept whole in PostgreSQL. The operator resets the dataset's shape and
    replays them (what `POST …/dead-letters/replay` does: the same bytes to the same topic): they
    are stored, once, as the new shape version."""
    from fcl.storage.stores import ApiStore

    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    topic = senv.topic(Topic.TRAINING_SAMPLES)
    old = samples_event("reshaped", 3)
    new = samples_event("reshaped", 4)
    for sample in new["samples"]:
        sample["features"] = {"income": 1.0}  # another shape, not an extension
    raw = encode(new) + b" " * 100  # whitespace at the end: the value kept must be these bytes
    await produce_raw(senv.settings, topic, [(b"reshaped", encode(old))])
    await eventually(lambda: scalar(db, "SELECT count(*) = 3 FROM training_samples"), logs=senv.logs)
    await produce_raw(senv.settings, topic, [(b"reshaped", raw)])
    store = ApiStore(db)

    async def kept() -> bool:
        return bool(await store.dead_letters(limit=10, after=0, reason="shape", since=None))

    await eventually(kept, what="the refused event kept", logs=senv.logs)
    [letter] = await store.dead_letters(limit=10, after=0, reason="shape", since=None)
    assert (letter.key, letter.value, letter.value_bytes) == (b"reshaped", raw, len(raw))
    assert letter.source_topic == topic and letter.replays == 0 and "reset-shape" in letter.reason
    [on_topic] = await read_topic(senv.settings, senv.topic(Topic.DEAD_LETTER), until=lambda r: len(r) >= 1)
    assert on_topic["event_id"] == str(letter.letter_id)

    assert (await store.reset_shape("reshaped")) is not None
    for replay in await store.for_replay(ids=None, reason="shape", since=None, limit=100):
        await produce_raw(senv.settings, replay.source_topic, [(replay.key, replay.value)])
        await store.replayed([replay.id])
    await eventually(lambda: scalar(db, "SELECT count(*) = 7 FROM training_samples"), logs=senv.logs)
    dataset = await store.dataset("reshaped")
    assert dataset is not None and dataset.shape_version == 2 and dataset.sample_shape == {"features": ["income"]}
    [replayed] = await store.dead_letters(limit=10, after=0, reason="shape", since=None)
    assert replayed.replays == 1 and replayed.replayed_at is not None
    # the same bytes again: the same event id, a duplicate, not stored twice; a valid event of the
    # new shape behind it on the same partition shows when it has been read
    fence = samples_event("reshaped", 1)
    fence["samples"][0]["features"] = {"income": 2.0}
    await produce_raw(senv.settings, topic, [(replayed.key, replayed.value), (b"reshaped", encode(fence))])
    await eventually(lambda: scalar(db, "SELECT count(*) >= 8 FROM training_samples"), logs=senv.logs)
    assert await scalar(db, "SELECT count(*) FROM training_samples") == 8


async def test_samples_crossing_a_threshold_make_one_event_and_one_job_per_crossing(streams) -> None:
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    topic = senv.topic(Topic.TRAINING_SAMPLES)
    batches = [samples_event("seg", 10) for _ in range(12)]  # 120 samples, threshold 50
    repeat = batches[3]  # redelivered: stored and counted once
    wrong_shape = samples_event("seg", 2)
    wrong_shape["samples"][1] = {"user_id": "u1", "features": {"spend": "lots"}}
    other_type = {
        "event_id": str(uuid.uuid4()),
        "dataset_id": "seg",
        "model_type": "spending",
        "samples": [{"user_id": "u1", "date": "2026-01-01", "amount": 3.5}],
    }
    await produce_raw(senv.settings, topic, [(b"seg", encode(b)) for b in [*batches, repeat, wrong_shape, other_type]])

    await eventually(
        lambda: scalar(db, "SELECT total_samples = 120 FROM datasets WHERE dataset_id = 'seg'"),
        logs=senv.logs,
        what="120 samples stored",
    )
    await eventually(lambda: scalar(db, "SELECT count(*) = 1 FROM training_jobs"), logs=senv.logs)
    letters = await read_topic(senv.settings, senv.topic(Topic.DEAD_LETTER), until=lambda r: len(r) >= 2)
    assert sorted(letter["reason"][:7] for letter in letters) == ["dataset", "schema:"]
    assert any("samples.1.features.spend" in letter["reason"] for letter in letters)
    assert any("holds segmentation samples, not spending" in letter["reason"] for letter in letters)
    assert await scalar(db, "SELECT count(*) FROM training_samples WHERE dataset_id = 'seg'") == 120

    # A trainer used the samples and finished; 50 more cross the threshold a second time.
    async with db.transaction() as s:
        await DatasetRepository(s).consume_up_to("seg", await SampleRepository(s).watermark("seg"))
    await rows(db, "UPDATE training_jobs SET status = 'completed' RETURNING id")
    await produce_raw(senv.settings, topic, [(b"seg", encode(samples_event("seg", 10))) for _ in range(5)])
    await eventually(lambda: scalar(db, "SELECT count(*) = 2 FROM training_jobs"), logs=senv.logs)

    events = await read_topic(senv.settings, senv.topic(Topic.DATASET_THRESHOLD), until=lambda r: len(r) >= 2)
    # the ids are in this database's own namespace: not the public one a producer could compute
    (ns,) = await rows(db, "SELECT trigger_namespace FROM installation")
    ids = [threshold_event_id("seg", 1, ns.trigger_namespace), threshold_event_id("seg", 2, ns.trigger_namespace)]
    assert [e["event_id"] for e in events] == ids
    assert threshold_event_id("seg", 1) not in ids
    # sample_count is the counter when the crossing was seen: at least the threshold (a batch of
    # events may carry it past 50 at once).
    assert all(
        e["sample_count"] >= 50 and e["threshold"] == 50 and e["model_type"] == "segmentation" and e["_key"] == "seg"
        for e in events
    )
    assert_schema(Topic.DATASET_THRESHOLD, events)
    triggers = await rows(db, "SELECT event_id FROM job_triggers ORDER BY received_at")
    assert [t.event_id for t in triggers] == ids


async def _burst_with_interruption(senv: StreamsEnv, db: Database, interrupt, n: int = 300) -> None:
    events = [threshold(f"burst-{i}", priority=i % 10) for i in range(n)]
    topic = senv.topic(Topic.DATASET_THRESHOLD)
    items = [(e["dataset_id"].encode(), encode(e)) for e in events]
    items += [(e["dataset_id"].encode(), encode(e)) for e in events[::5]]  # repeats
    third = len(items) // 3
    await produce_raw(senv.settings, topic, items[:third])
    await eventually(lambda: scalar(db, "SELECT count(*) > 0 FROM training_jobs"), logs=senv.logs)

    async def produce_middle() -> None:  # called by the interruption while it is in effect
        await produce_raw(senv.settings, topic, items[third : 2 * third])

    await interrupt(produce_middle)
    await produce_raw(senv.settings, topic, items[2 * third :])
    await eventually(
        lambda: scalar(db, "SELECT count(*) = :n FROM job_triggers", n=n),
        timeout=120,
        logs=senv.logs,
        what=f"{n} triggers",
    )
    statuses = await read_topic(
        senv.settings,
        senv.topic(Topic.TRAINING_STATUS),
        until=lambda r: len({s["job_id"] for s in r}) >= n,
        timeout=120,
    )
    await asyncio.sleep(1)
    assert await scalar(db, "SELECT count(*) FROM training_jobs") == n
    assert await scalar(db, "SELECT count(DISTINCT dataset_id) FROM training_jobs") == n
    # Status events are at-least-once: a repeat carries the same event_id, and every job has one.
    by_event = {s["event_id"]: s["job_id"] for s in statuses}
    assert len(set(by_event.values())) == n == len(by_event)


async def test_sigkill_in_a_burst_loses_nothing_and_duplicates_nothing(streams) -> None:
    senv, db = streams
    first = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, first)

    async def kill_and_restart(produce_middle) -> None:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        await produce_middle()
        second = senv.start_worker()
        await asyncio.to_thread(senv.wait_ready, second)

    await _burst_with_interruption(senv, db, kill_and_restart)


async def test_postgres_outage_in_a_burst_loses_nothing(stack: RunStack, tmp_path: Path) -> None:
    """On a PostgreSQL server of the test's own, which it stops and starts: the other tests,
    running meanwhile on the stack's server, are not disturbed."""
    import shutil

    from fcl.stack.common import free_port
    from fcl.stack.postgres import DATABASE, ROLE, PostgresServer, find_bindir
    from fcl.storage.migrate import upgrade

    bindir, port = find_bindir(), free_port()
    server = PostgresServer(tmp_path / "pg")
    await asyncio.to_thread(server.start, bindir, port, 60)
    url = f"postgresql+asyncpg://{ROLE}:{ROLE}@127.0.0.1:{port}/{DATABASE}"
    prefix = new_prefix()
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, database_url=url, topic_prefix=prefix, _env_file=None)
    env = {
        **os.environ,
        "FCL_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "FCL_DATABASE_URL": url,
        "FCL_TOPIC_PREFIX": prefix,
    }
    senv = StreamsEnv(settings=settings, env=env, workdir=tmp_path)
    db = Database(url, pool_size=2)
    try:
        await asyncio.to_thread(upgrade, url)
        await create_topics(settings)
        worker = senv.start_worker()
        await asyncio.to_thread(senv.wait_ready, worker)

        async def outage(produce_middle) -> None:
            await asyncio.to_thread(server.stop, bindir)
            await produce_middle()  # events keep arriving while the database is down
            await asyncio.sleep(4)
            assert worker.poll() is None, "the worker must wait for the database, not exit"
            await asyncio.to_thread(server.start, bindir, port, 60)

        await _burst_with_interruption(senv, db, outage)
        assert "database unavailable" in senv.logs()
    finally:
        senv.stop_all()
        await db.close()
        await asyncio.to_thread(server.stop, bindir)
        home = server.home.parent if server.home.parent.name.startswith("fcl-") else server.home
        shutil.rmtree(home, ignore_errors=True)


async def test_two_workers_split_partitions_and_make_one_job_per_trigger(streams) -> None:
    senv, db = streams
    workers = [senv.start_worker(), senv.start_worker()]
    for w in workers:
        await asyncio.to_thread(senv.wait_ready, w)
    n = 200
    events = [threshold(f"pair-{i}") for i in range(n)]
    items = [(e["dataset_id"].encode(), encode(e)) for e in events + events[:50]]
    await produce_raw(senv.settings, senv.topic(Topic.DATASET_THRESHOLD), items)
    await eventually(lambda: scalar(db, "SELECT count(*) = :n FROM job_triggers", n=n), timeout=90, logs=senv.logs)
    await asyncio.sleep(2)  # let any duplicate arrive
    assert await scalar(db, "SELECT count(*) FROM training_jobs") == n
    sources = {r.source for r in await rows(db, "SELECT DISTINCT source FROM job_triggers")}
    assert len(sources) == 2, f"both workers should have admitted some triggers: {sources}"


async def test_the_producer_client_sends_events_the_worker_accepts(streams) -> None:
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    async with FclProducer(senv.settings) as producer:
        sent_samples = await producer.send_samples(
            "client-goal",
            "goal",
            [
                {"user_id": f"u{i}", "goal_id": f"g{i}", "features": {"progress": i / 10}, "achieved": i % 2 == 0}
                for i in range(5)
            ],
        )
        sent_trigger = await producer.send_threshold("client-spend", "spending", priority=9)
        with pytest.raises(ValueError, match="unknown model type"):
            await producer.send_threshold("x", "fraud")
        with pytest.raises(ValueError, match="amount"):
            await producer.send_samples("x", "spending", [{"user_id": "u", "date": "2026-01-01"}])
    await eventually(lambda: scalar(db, "SELECT count(*) = 1 FROM training_jobs WHERE priority = 9"), logs=senv.logs)
    await eventually(
        lambda: scalar(db, "SELECT total_samples = 5 FROM datasets WHERE dataset_id = 'client-goal'"), logs=senv.logs
    )
    sent = await read_topic(senv.settings, senv.topic(Topic.TRAINING_SAMPLES), until=lambda r: len(r) >= 1)
    assert_schema(Topic.TRAINING_SAMPLES, sent)
    assert sent[0]["event_id"] == sent_samples["event_id"] and sent[0]["_key"] == "client-goal"
    triggers = await read_topic(senv.settings, senv.topic(Topic.DATASET_THRESHOLD), until=lambda r: len(r) >= 1)
    assert_schema(Topic.DATASET_THRESHOLD, triggers)
    assert triggers[0]["event_id"] == sent_trigger["event_id"]


async def test_fcl_produce_threshold_makes_a_job(streams) -> None:
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    cmd = [
        str(Path(sys.executable).with_name("fcl")),
        "produce",
        "threshold",
        "--dataset-id",
        "cli-ds",
        "--model-type",
        "segmentation",
        "--priority",
        "6",
        "--event-id",
        "cli-event-1",
    ]
    for _ in range(2):  # the same event id twice: one job
        out = await asyncio.to_thread(
            subprocess.run, cmd, env=senv.env, cwd=senv.workdir, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["event_id"] == "cli-event-1"
    await eventually(lambda: scalar(db, "SELECT count(*) = 1 FROM job_triggers"), logs=senv.logs)
    bad = await asyncio.to_thread(
        subprocess.run,
        [*cmd[:-4], "--model-type", "fraud"],
        env=senv.env,
        cwd=senv.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown model type 'fraud'" in bad.stderr
    await asyncio.sleep(1)
    assert await scalar(db, "SELECT count(*) FROM training_jobs") == 1
    assert await scalar(db, "SELECT priority FROM training_jobs") == 6


async def test_fcl_simulate_feeds_samples_the_worker_stores_and_a_trainer_can_learn_from(streams) -> None:
    from fcl.trainers.base import TrainRequest
    from fcl.trainers.registry import get_trainer
    from fcl.trainers.simulator import FinCoachSimulator

    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    cmd = [
        str(Path(sys.executable).with_name("fcl")),
        "simulate",
        "--model-type",
        "segmentation",
        "--users",
        "400",
        "--seed",
        "3",
        "--batch",
        "10",
        "--dataset-id",
        "sim-seg",
    ]  # small events: this fixture bounds them at 4 KiB
    out = await asyncio.to_thread(
        subprocess.run, cmd, env=senv.env, cwd=senv.workdir, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "sent 400 segmentation samples in 40 events" in out.stderr
    await eventually(
        lambda: scalar(db, "SELECT total_samples = 400 FROM datasets WHERE dataset_id = 'sim-seg'"),
        logs=senv.logs,
        what="400 simulated samples stored",
    )
    # What was stored through Kafka is what the simulator made, and a trainer learns the segments from it.
    stored = [
        r.payload
        for r in await rows(db, "SELECT payload FROM training_samples WHERE dataset_id = 'sim-seg' ORDER BY id")
    ]
    assert stored == FinCoachSimulator(seed=3, n_users=400).segmentation_samples()
    result = await asyncio.to_thread(get_trainer("segmentation").train, TrainRequest(samples=stored, seed=1))
    assert result.metrics["k"] == 4


async def test_a_poison_event_is_dead_lettered_and_the_next_one_on_its_partition_goes_through(streams) -> None:
    """Deeply nested JSON (once an exception out of the parser that stopped the agent) sent just
    before a valid event with the same key, on both input topics: the poison is dead-lettered with
    its reason, the valid event is stored, and the worker keeps running."""
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    poison = b"[" * 1500 + b"]" * 1500  # under the 4 KiB event limit of this fixture
    valid = threshold("same-key")
    await produce_raw(
        senv.settings, senv.topic(Topic.DATASET_THRESHOLD), [(b"same-key", poison), (b"same-key", encode(valid))]
    )
    samples = samples_event("same-key-samples", 3)
    await produce_raw(
        senv.settings,
        senv.topic(Topic.TRAINING_SAMPLES),
        [(b"same-key-samples", poison), (b"same-key-samples", encode(samples))],
    )
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 1 FROM job_triggers WHERE event_id = :e", e=valid["event_id"]),
        logs=senv.logs,
        what="the valid trigger admitted",
    )
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 3 FROM training_samples WHERE dataset_id = 'same-key-samples'"),
        logs=senv.logs,
        what="the valid samples stored",
    )
    letters = await read_topic(senv.settings, senv.topic(Topic.DEAD_LETTER), until=lambda r: len(r) >= 2)
    assert sorted(letter["source_topic"] for letter in letters) == sorted(
        [senv.topic(Topic.DATASET_THRESHOLD), senv.topic(Topic.TRAINING_SAMPLES)]
    )
    assert all("nested deeper" in letter["reason"] for letter in letters)
    assert worker.poll() is None, "the streams worker must keep running"


@pytest.mark.parametrize("streams", [1024 * 1024], indirect=True)  # the contract's default limit
async def test_the_poison_corpus_is_dead_lettered_once_each_and_every_valid_event_behind_it_is_stored(
    streams,
) -> None:
    """Every kind of hostile value in tests/poison.py, each followed by a valid event on the same
    partition, on both input topics: each valid event is stored, each poison is exactly one dead
    letter of at most 64 KiB naming its limit, the worker lives and the outbox drains."""
    senv, db = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    cases = [(Topic.DATASET_THRESHOLD, p) for p in [*COMMON, *POISON_THRESHOLD]]
    cases += [(Topic.TRAINING_SAMPLES, p) for p in [*COMMON, *POISON_SAMPLES]]
    valid_triggers, valid_samples = [], []
    for topic in (Topic.DATASET_THRESHOLD, Topic.TRAINING_SAMPLES):
        items: list[tuple[bytes | None, bytes | None]] = []
        for i, (_, poison) in enumerate(c for c in cases if c[0] is topic):
            if topic is Topic.DATASET_THRESHOLD:
                event = threshold(f"after-poison-{i}")
                valid_triggers.append(event["event_id"])
            else:
                event = samples_event(f"after-poison-{i}", 2)
                valid_samples.append(event["event_id"])
            items += [(poison.key, poison.value), (b"same", encode(event))]
        await produce_raw(senv.settings, senv.topic(topic), items, partition=0)
    await eventually(
        lambda: _count_is(
            db, "SELECT count(*) FROM job_triggers WHERE event_id = ANY(:ids)", len(valid_triggers), ids=valid_triggers
        ),
        logs=senv.logs,
        what="every valid trigger behind a poison admitted",
    )
    await eventually(
        lambda: _count_is(
            db, "SELECT count(*) FROM sample_batches WHERE event_id = ANY(:ids)", len(valid_samples), ids=valid_samples
        ),
        logs=senv.logs,
        what="every valid samples event behind a poison stored",
    )
    letters = await read_topic(senv.settings, senv.topic(Topic.DEAD_LETTER), until=lambda r: len(r) >= len(cases))
    assert len(letters) == len(cases), [(x["source_topic"], x["offset"], x["reason"]) for x in letters]
    by_place = {(x["source_topic"], x["offset"]): x for x in letters}
    assert len(by_place) == len(cases), "one dead letter per poison"
    for topic in (Topic.DATASET_THRESHOLD, Topic.TRAINING_SAMPLES):
        poisons = [p for t, p in cases if t is topic]
        for i, poison in enumerate(poisons):
            letter = by_place[(senv.topic(topic), 2 * i)]  # poisons at even offsets of partition 0
            assert poison.reason in letter["reason"], (poison.name, letter["reason"])
            assert len(json.dumps({k: v for k, v in letter.items() if not k.startswith("_")}).encode()) <= 64 * 1024
    assert_schema(Topic.DEAD_LETTER, letters)
    # each poison is also kept for replay, under its letter's id: its bytes as they arrived, cut to
    # FCL_MAX_EVENT_BYTES (the huge ones), with the size it had
    kept = {
        (r.source_topic, r.offset): r
        for r in await rows(db, 'SELECT letter_id, source_topic, "offset", key, value, value_bytes FROM dead_letters')
    }
    assert len(kept) == len(cases)
    for topic in (Topic.DATASET_THRESHOLD, Topic.TRAINING_SAMPLES):
        for i, poison in enumerate(p for t, p in cases if t is topic):
            row = kept[(senv.topic(topic), 2 * i)]
            assert str(row.letter_id) == by_place[(senv.topic(topic), 2 * i)]["event_id"]
            assert row.value_bytes == len(poison.value or b"")
            assert row.value == (None if poison.value is None else poison.value[: senv.settings.max_event_bytes]), (
                poison.name
            )
            assert row.key == poison.key
    await eventually(
        lambda: _count_is(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL", 0),
        what="the outbox drained",
    )
    assert worker.poll() is None, "the streams worker must keep running"


async def _count_is(db: Database, sql: str, expected: int, **params: Any) -> bool:
    return int(await scalar(db, sql, **params)) == expected


async def test_sigterm_stops_the_worker_cleanly_with_status_0(streams) -> None:
    """Its agents and relay end because it stops, which is not a death: status 0, not the 1 that a
    loop ending by itself gets."""
    senv, _ = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 60) == 0, senv.logs()
    assert "died" not in senv.logs()


def _relay_of(worker_pid: int) -> int:
    """The pid of the relay process a streams worker started (a child running fcl.streams.relay)."""
    for child in Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split():
        if b"fcl.streams.relay" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError(f"streams worker {worker_pid} has no relay process")


async def _is_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")  # a zombie is gone
    except FileNotFoundError:
        return True


async def test_the_relay_process_and_the_worker_live_and_die_together(streams) -> None:
    """The outbox relay runs in a process of its own. Its death ends the worker with status 1 at
    once; the worker's death (SIGKILL, no clean-up) ends the relay (its standard input closes);
    SIGTERM to the whole process group stops both, with status 0 (the relay waits for its
    parent to close its input instead of ending first, which its parent would take for a death)."""
    senv, _ = streams
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    os.kill(_relay_of(worker.pid), signal.SIGKILL)
    assert await asyncio.to_thread(worker.wait, 60) == 1, senv.logs()
    assert "the outbox relay process died" in senv.logs()

    killed = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, killed)
    orphan = _relay_of(killed.pid)
    os.kill(killed.pid, signal.SIGKILL)
    await asyncio.to_thread(killed.wait, 30)
    await eventually(lambda: _is_gone(orphan), what="the orphaned relay process ended")

    stopped = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, stopped)
    relay = _relay_of(stopped.pid)
    os.killpg(stopped.pid, signal.SIGTERM)
    assert await asyncio.to_thread(stopped.wait, 60) == 0, senv.logs()
    await eventually(lambda: _is_gone(relay), what="the relay process ended with its worker")


async def test_a_producers_traceparent_is_continued_by_the_job_and_carried_by_its_queued_event(streams) -> None:
    """A threshold event sent with a W3C `traceparent` header (a producer's span): with traces on
    (OTEL_TRACES_EXPORTER=console) the worker's `fcl.admit` span is its child, the new job keeps
    that span's context, and the job's `queued` event on Kafka carries the producer's trace id. A
    hostile header value (not a traceparent) starts a new trace instead, and the job is made."""
    senv, db = streams
    senv.env["OTEL_TRACES_EXPORTER"] = "console"
    worker = senv.start_worker()
    await asyncio.to_thread(senv.wait_ready, worker)
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traced, hostile = threshold("ds-traced"), threshold("ds-hostile")
    producer = AIOKafkaProducer(bootstrap_servers=senv.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = senv.topic(Topic.DATASET_THRESHOLD)
        await producer.send_and_wait(
            topic, encode(traced), key=b"ds-traced", headers=[("traceparent", f"00-{trace_id}-{parent}-01".encode())]
        )
        await producer.send_and_wait(
            topic, encode(hostile), key=b"ds-hostile", headers=[("traceparent", b"\xff" * 300)]
        )
    finally:
        await producer.stop()
    await eventually(lambda: scalar(db, "SELECT count(*) = 2 FROM training_jobs"), logs=senv.logs, what="2 jobs")
    stored = {
        r.dataset_id: r.trace_context for r in await rows(db, "SELECT dataset_id, trace_context FROM training_jobs")
    }
    assert stored["ds-traced"].split("-")[1] == trace_id and stored["ds-traced"].split("-")[2] != parent
    assert stored["ds-hostile"] is not None and stored["ds-hostile"].split("-")[1] != trace_id
    consumer = AIOKafkaConsumer(
        senv.topic(Topic.TRAINING_STATUS),
        bootstrap_servers=senv.settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    headers: dict[str, dict[str, bytes]] = {}
    try:
        async with asyncio.timeout(30):
            while len(headers) < 2:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    headers |= {json.loads(r.value)["dataset_id"]: dict(r.headers or ()) for r in records}
    finally:
        await consumer.stop()
    assert headers["ds-traced"]["traceparent"].decode() == stored["ds-traced"]
    output = (senv.workdir / "worker-0.log").read_text(errors="replace").splitlines()
    spans = [json.loads(line) for line in output if line.startswith("{") and '"context"' in line]
    admit = next(s for s in spans if s["name"] == "fcl.admit" and s["attributes"]["fcl.dataset_id"] == "ds-traced")
    assert admit["context"]["trace_id"] == f"0x{trace_id}" and admit["parent_id"] == f"0x{parent}"
