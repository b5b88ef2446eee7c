"""The real broker: topics are created, and a message goes through it and comes back."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contract.topics import Topic
from tests.conftest import RunStack


async def test_create_topic_produce_and_consume(stack: RunStack) -> None:
    topic = stack.settings().topic(f"roundtrip-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1)])
        assert topic in await admin.list_topics()
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
        listed = set(await admin.list_topics())
        assert set(names) <= listed
        assert names[0].endswith(".training-samples") and names[-1].endswith(".dead-letter")
    finally:
        await admin.close()
