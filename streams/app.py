"""The Faust app: `faust -A streams.app worker` or `fcl streams`.

Four agents read the input topics as raw bytes (so a malformed event reaches our code and can be
dead-lettered instead of failing in a deserializer), group them into batches while the previous
batch commits (streams.batching) and hand each batch to an ingestor (streams.ingest) that
commits its effects in one PostgreSQL transaction.
Events are acknowledged only after that commit; an agent never raises and never trains.
The outbox relay (`storage.outbox`), which publishes what the transactions wrote as soon as
PostgreSQL notifies it of their commit, runs in a process of its own that a task starts and
watches (streams.relay).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from fcl.contract import logs, tracing
from fcl.contract.lifeline import exit_when_done, run_or_exit
from fcl.contract.probes import Probes
from fcl.contract.settings import Settings, get_settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.messaging.producer import BackgroundProducer
from fcl.messaging.security import faust_credentials
from fcl.storage.db import Database
from fcl.storage.entities import AdmissionPolicy
from fcl.storage.migrate import at_head
from fcl.storage.stores import IngestStore
from fcl.streams import metrics
from fcl.streams.batching import group_commit
from fcl.streams.ingest import (
    Ingestor,
    OutcomeIngestor,
    PredictionIngestor,
    SampleIngestor,
    ThresholdIngestor,
    commit_parsed,
)
from fcl.streams.parsing import RawMessage
from fcl.streams.relay import MODULE as RELAY_MODULE

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    (Path(".fcl") / "faust").mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        f"{settings.topic_prefix}streams",
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_credentials=faust_credentials(settings),
        producer_acks=-1,  # all in-sync replicas
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        broker_session_timeout=settings.stream_session_timeout,
        # Faust sets up logging itself: with fcl's format and level (contract.logs)
        logging_config=logs.dict_config(settings.log_format, settings.log_level),
        store="memory://",
        # Faust's own folder (no tables are kept there: the state is in PostgreSQL) goes under the
        # ignored .fcl/ of the folder the worker runs in, not next to the code.
        datadir=str(Path(".fcl") / "faust" / "{conf.id}-data"),
    )
    # commit_batch retries instead of pinging. The admission and ingest statements take arrays
    # whose contents decide the best plan: a generic plan made while the tables were small (a
    # fresh database) kept seq-scanning them, with 500-event commits of 0.5-2 s measured, where
    # a plan per execution takes 10-20 ms (bench/bench_streams.py).
    db = Database(
        settings.database_url, pool_size=4, pre_ping=False, server_settings={"plan_cache_mode": "force_custom_plan"}
    )

    store = IngestStore(db, AdmissionPolicy.from_settings(settings))

    def raw_topic(name: Topic) -> faust.TopicT:
        return app.topic(
            name.full_name(settings.topic_prefix),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    async def consume(stream: Any, ingestor: Ingestor[Any]) -> None:  # a faust Stream (its types lack `noack`)
        async def parsed() -> AsyncIterator[tuple[EventT[Any], Any]]:
            # Each event is parsed as it is read, so parsing overlaps the commit of the batch before.
            async for e in stream.noack().events():
                message = RawMessage(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    traceparent=tracing.from_headers(e.message.headers),
                )
                yield e, ingestor.parse([message])[0]

        async def commit(batch: Sequence[tuple[EventT[Any], Any]]) -> bool:
            report = await commit_parsed(ingestor, [item for _, item in batch], should_stop=lambda: app.should_stop)
            if report is None:
                return False  # stopping before the batch committed: not acknowledged, redelivered later
            for reason in report.dead_letters:
                log.info("dead-lettered: %s", reason)
                metrics.DEAD_LETTERS.labels(metrics.refusal_kind(reason)).inc()
            metrics.SAMPLES_STORED.inc(report.samples_stored)
            metrics.ADMISSIONS.inc(report.jobs_created)
            metrics.PREDICTIONS_STORED.inc(report.predictions_stored)
            for kind, n in (
                ("joined", report.outcomes_joined),
                ("waiting", report.outcomes_waiting),
                ("repeated", report.outcomes_repeated),
            ):
                if n:
                    metrics.OUTCOMES.labels(kind).inc(n)
            for event, _ in batch:
                await stream.ack(event)
            return True

        # Manual acks: an event is acknowledged only after its batch committed.
        await group_commit(parsed(), commit, max_batch=settings.stream_batch_max)

    def stopping() -> bool:
        return bool(app.should_stop)

    # An agent or the relay that ends while the app is not stopping ends the process (status 1).
    @app.agent(raw_topic(Topic.DATASET_THRESHOLD), name="admit-threshold-events")
    async def admit_threshold_events(stream: faust.StreamT[Any]) -> None:
        ingestor = ThresholdIngestor(store, settings, source=f"kafka/{socket.gethostname()}:{os.getpid()}")
        await run_or_exit(lambda: consume(stream, ingestor), "dataset-threshold agent", stopping)

    @app.agent(raw_topic(Topic.TRAINING_SAMPLES), name="ingest-training-samples")
    async def ingest_training_samples(stream: faust.StreamT[Any]) -> None:
        ingestor = SampleIngestor(store, settings)
        await run_or_exit(lambda: consume(stream, ingestor), "training-samples agent", stopping)

    @app.agent(raw_topic(Topic.PREDICTIONS), name="record-predictions")
    async def record_predictions(stream: faust.StreamT[Any]) -> None:
        ingestor = PredictionIngestor(store, settings)
        await run_or_exit(lambda: consume(stream, ingestor), "predictions agent", stopping)

    @app.agent(raw_topic(Topic.OUTCOMES), name="join-outcomes")
    async def join_outcomes(stream: faust.StreamT[Any]) -> None:
        ingestor = OutcomeIngestor(store, settings)
        await run_or_exit(lambda: consume(stream, ingestor), "outcomes agent", stopping)

    @app.task
    async def relay_outbox() -> None:
        """The outbox relay runs in a process of its own (streams.relay): started here, watched
        here (its end while this process is not stopping ends this one), and stopped by closing
        its standard input."""
        relay = await asyncio.create_subprocess_exec(sys.executable, "-m", RELAY_MODULE, stdin=asyncio.subprocess.PIPE)

        async def watch() -> None:
            status = await relay.wait()
            if not stopping():
                raise RuntimeError(f"the relay process exited with status {status}")

        try:
            await run_or_exit(watch, "outbox relay process", stopping)
        finally:
            if relay.returncode is None:
                assert relay.stdin is not None
                relay.stdin.close()
                try:
                    await asyncio.wait_for(relay.wait(), 20.0)
                except TimeoutError:
                    relay.kill()
                    await relay.wait()

    if settings.metrics_port is not None:
        metrics.CONSUMER_LAG.watch(lambda: app.consumer)
        producer = BackgroundProducer(settings)  # only to say whether the broker answers
        probes = Probes(
            settings.metrics_host,
            settings.metrics_port,
            checks={"database": functools.partial(at_head, settings.database_url), "broker": producer.answers},
        )

        @app.task
        async def serve_probes() -> None:
            exit_when_done(producer.start(), "Kafka producer", stopping)
            try:
                port = await probes.open()
                print(f"fcl streams: /metrics, /livez, /readyz on http://{settings.metrics_host}:{port}", flush=True)
                await run_or_exit(probes.run, "probe server", stopping)
            finally:
                await producer.stop()

    return app


app = create_app()


def main(argv: list[str] | None = None) -> None:
    """Run a streams worker (what `fcl streams` does)."""
    import sys

    settings = get_settings()
    tracing.setup("streams")
    asyncio.run(ensure_topics(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop; Faust wants one
    sys.argv = [
        "fcl streams",
        "worker",
        "--loglevel",
        logs.faust_level(settings.log_level),
        "--without-web",
        *(argv or []),
    ]
    app.main()
