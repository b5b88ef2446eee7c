"""The floor under a streams worker: a bare Faust agent that reads a topic as the worker does (raw
bytes, manual acks, the worker's group-commit batching, the same consumer settings) and does
nothing else: no parsing, no database, no relay. It writes `{"first", "last", "seen"}` (the
wall-clock times of its first and last batch, and the events seen) to FLOOR_OUT once it has seen
FLOOR_EXPECT events. bench_streams.py runs it as a process of its own, like the worker.

    FLOOR_TOPIC=... FLOOR_EXPECT=20000 FLOOR_OUT=/tmp/x.json python bench/_faust_floor.py worker
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import faust

from fcl.contract.settings import get_settings
from fcl.streams.batching import group_commit

settings = get_settings()
TOPIC = os.environ["FLOOR_TOPIC"]
EXPECT = int(os.environ["FLOOR_EXPECT"])
OUT = Path(os.environ["FLOOR_OUT"])

app = faust.App(
    f"{settings.topic_prefix}floor-{os.getpid()}",
    broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    topic_partitions=settings.topic_partitions,
    producer_acks=-1,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=0.5,
    broker_session_timeout=settings.stream_session_timeout,
    store="memory://",
    datadir=str(Path(".fcl") / "faust" / "{conf.id}-data"),
)
topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


@app.agent(topic, name="floor")
async def floor(stream: Any) -> None:
    seen = 0
    first: float | None = None

    async def events() -> AsyncIterator[Any]:
        async for event in stream.noack().events():
            yield event

    async def commit(batch: Sequence[Any]) -> bool:
        nonlocal seen, first
        if first is None:
            first = time.time()
        for event in batch:
            await stream.ack(event)
        seen += len(batch)
        if seen >= EXPECT:
            OUT.write_text(json.dumps({"first": first, "last": time.time(), "seen": seen}))
        return True

    await group_commit(events(), commit, max_batch=settings.stream_batch_max)


if __name__ == "__main__":
    app.main()
