"""Topic administration: the contract's topics exist, with the configured partitions, replication
factor and `min.insync.replicas`; an existing topic with fewer partitions or replicas than
configured is named in one warning line (fcl never changes a topic it did not create)."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.security import client_options, start_or_refuse

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create whichever of the contract's topics is missing; returns the names created. Raises
    `messaging.security.KafkaRefused` (one line) when the broker refuses fcl's credentials or fcl
    its certificate."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **client_options(settings))
    await start_or_refuse(settings, admin.start, admin.close)
    try:
        names = [t.full_name(settings.topic_prefix) for t in Topic]
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=n,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs={"min.insync.replicas": str(settings.topic_min_insync_replicas)},
                        )
                        for n in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another worker created them at the same moment
        present = [n for n in names if n in existing]
        if present:
            for line in short_topics(settings, await admin.describe_topics(present)):
                log.warning("%s", line)
        return missing
    finally:
        await admin.close()


def short_topics(settings: Settings, described: list[dict[str, Any]]) -> list[str]:
    """One line per topic with fewer partitions or replicas than the settings ask for."""
    lines = []
    for topic in described:
        partitions = topic.get("partitions") or []
        replicas = min((len(p.get("replicas") or []) for p in partitions), default=0)
        short = []
        if len(partitions) < settings.topic_partitions:
            short.append(f"{len(partitions)} partitions (FCL_TOPIC_PARTITIONS {settings.topic_partitions})")
        if replicas < settings.topic_replication_factor:
            short.append(f"{replicas} replicas (FCL_TOPIC_REPLICATION_FACTOR {settings.topic_replication_factor})")
        if short:
            lines.append(f"topic {topic['topic']} exists with only {' and '.join(short)}; fcl does not change it")
    return lines
