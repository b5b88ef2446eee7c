"""The real broker: topics are created, a message goes through it and comes back, and the outbox
relay parks what the broker refuses."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from fcl.contract.backoff import wait_until
from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.messaging.producer import BackgroundProducer, is_record_error
from fcl.storage.db import Database
from fcl.storage.outbox import OutboxRelay, OutboxRepository
from tests.conftest import RunStack


async def test_create_topic_produce_and_consume(stack: RunStack) -> None:
    topic = stack.settings().topic(f"roundtrip-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])

        async def listed() -> bool:  # the controller accepted it; the broker's metadata follows
            return topic in await admin.list_topics()

        assert await wait_until(listed, timeout=30, interval=0.2)
        described = await admin.describe_topics([topic])
        assert len(described[0]["partitions"]) == 3
    finally:
        await admin.close()

    sent = [{"event_id": str(uuid.uuid4()), "n": n} for n in range(10)]
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", value_serializer=lambda v: json.dumps(v).encode()
    )
    await producer.start()
    try:
        for event in sent:
            await producer.send_and_wait(topic, event, key=b"dataset-a")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=f"g-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[Any] = []
    try:
        while len(received) < len(sent):
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"nothing more from {topic} after {len(received)} messages"
            for records in batch.values():
                received.extend(records)
    finally:
        await consumer.stop()
    # One key, so one partition, so the broker kept their order.
    assert [json.loads(r.value) for r in received] == sent
    assert {r.key for r in received} == {b"dataset-a"}
    assert len({r.partition for r in received}) == 1


async def test_the_contracts_topics_can_be_created_under_the_run_prefix(stack: RunStack) -> None:
    # A prefix of its own: other tests (fcl produce, the streams workers) create topics under the
    # run prefix, and creating an existing topic is an error.
    names = [t.full_name(f"{stack.topic_prefix}created-{uuid.uuid4().hex[:6]}.") for t in Topic]
    assert all(n.startswith("fcl-test-") for n in names)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=n, num_partitions=4, replication_factor=1) for n in names])

        async def listed() -> bool:  # the broker's metadata follows the controller's a moment later
            return set(names) <= set(await admin.list_topics())

        assert await wait_until(listed, timeout=15, interval=0.2), names
        assert names[0].endswith(".training-samples") and names[-1].endswith(".dead-letter")
    finally:
        await admin.close()


async def test_a_row_the_broker_refuses_is_parked_and_the_rows_after_it_are_published(
    stack: RunStack, own_db: Database
) -> None:
    """An outbox row larger than the producer's request limit (as a dead letter of a big value
    once was) is tried max_attempts times, then parked with its error; the rows behind it go out,
    the outbox is otherwise empty, and published rows are deleted after the retention."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=own_db.url,
        topic_prefix=prefix,
        outbox_max_attempts=3,
        outbox_retention_seconds=0,
        _env_file=None,
    )
    await ensure_topics(settings)
    async with own_db.transaction() as s:
        await OutboxRepository(s).add_many(
            [
                ("training-status", "big", {"blob": "x" * (3 * 1024 * 1024)}),
                ("training-status", "after", {"n": 1}),
                ("training-status", "after", {"n": 2}),
            ]
        )
    producer = BackgroundProducer(settings)
    producer.start()
    relay = OutboxRelay.from_settings(
        settings, own_db, producer.send, notifications=None, is_record_error=is_record_error
    )
    try:
        for _ in range(200):
            if producer.connected:
                break
            await asyncio.sleep(0.05)
        for _ in range(5):  # no outage here: publish_once would raise one
            await relay.publish_once()
        async with own_db.transaction() as s:
            outbox = OutboxRepository(s)
            parked = await outbox.parked()
            figures = await outbox.figures()
        assert [(p.key, p.attempts) for p in parked] == [("big", 3)]
        assert parked[0].last_error is not None and "MessageSizeTooLarge" in parked[0].last_error
        assert (figures.pending, figures.parked) == (0, 1)
        assert relay.published == 2 and relay.parked == 1
        consumer = AIOKafkaConsumer(
            Topic.TRAINING_STATUS.full_name(prefix),
            bootstrap_servers=stack.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        try:
            got: list[dict[str, object]] = []
            while len(got) < 2:
                batch = await consumer.getmany(timeout_ms=5000)
                assert batch, "the rows after the parked one were not published"
                got += [json.loads(r.value) for records in batch.values() for r in records]
        finally:
            await consumer.stop()
        assert [g["n"] for g in got] == [1, 2]
        # Retention 0: the next idle turn deletes the published rows, never the parked one.
        assert await relay.publish_once() == 0
        async with own_db.transaction() as s:
            left = (await s.execute(text("SELECT key, published_at IS NULL FROM outbox ORDER BY id"))).all()
        assert [tuple(r) for r in left] == [("big", True)]
    finally:
        await producer.stop()
