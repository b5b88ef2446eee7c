"""Topic administration: the contract's topics exist, with the configured partitions."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contract.settings import Settings
from contract.topics import Topic


async def ensure_topics(settings: Settings, *, replication_factor: int = 1) -> list[str]:
    """Create whichever of the contract's topics is missing; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            t.full_name(settings.topic_prefix) for t in Topic if t.full_name(settings.topic_prefix) not in existing
        ]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=n, num_partitions=settings.topic_partitions, replication_factor=replication_factor
                        )
                        for n in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another worker created them at the same moment
        return missing
    finally:
        await admin.close()
