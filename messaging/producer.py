"""A Kafka producer for a process that publishes its outbox but is not the Faust app (the trainer
worker, the HTTP API). It connects in the background and keeps trying, so the process serves
while the broker is down; `send` refuses until it is connected (the relay then retries), and
`broker_ok` asks the broker for metadata (for `/healthz`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from aiokafka import AIOKafkaProducer
from aiokafka import errors as aiokafka_errors

from fcl.contract.backoff import retrying
from fcl.contract.service import Service
from fcl.contract.settings import Settings
from fcl.messaging.security import KafkaRefused, client_options, start_or_refuse

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The producer is not connected to the broker (yet)."""


class BackgroundProducer(Service):
    """Connects in `run()`, retrying until the broker answers (but not when it refuses fcl's
    credentials or fcl its certificate: `KafkaRefused` ends the task); `stop()` closes the
    producer."""

    name = "kafka-producer"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap
        self._producer: AIOKafkaProducer | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> Awaitable[object]:
        """Schedule a record; returns the awaitable of its delivery (what `OutboxRelay` expects)."""
        if self._producer is None:
            raise BrokerUnavailable(f"not connected to the broker at {self.bootstrap} yet")
        delivery: Awaitable[object] = await self._producer.send(topic, value, key=key, headers=headers)
        return delivery

    async def broker_ok(self, timeout: float = 2.0) -> str:
        """'ok', or why the broker cannot be reached."""
        producer = self._producer
        if producer is None:
            return "not connected yet"
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return "ok"

    async def answers(self) -> bool:
        """Whether the broker answers now (a readiness check)."""
        return await self.broker_ok() == "ok"

    async def run(self) -> None:
        """Start a producer, retrying with backoff until the broker answers or `stop()` is called;
        the process works without the broker meanwhile (its outbox keeps the events)."""

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, **client_options(self.settings)
            )
            await start_or_refuse(self.settings, producer.start, producer.stop)  # a refusal is not retried
            return producer

        async def wait(delay: float) -> None:  # a stop ends the wait at once
            await self.sleep(delay)

        try:
            self._producer = await retrying(
                what="kafka producer: broker not reachable",
                log=log,
                retry_on=lambda exc: not isinstance(exc, KafkaRefused),
                should_stop=lambda: self.stopping,
                initial=0.5,
                sleep=wait,
            )(start)
        except Exception:
            if not self.stopping:
                raise
            return
        # The task lives as long as the producer (a lifeline watches it: a producer refused by the
        # broker ends the process instead of a relay retrying for ever).
        await self.wait_stopping()

    async def stopped(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


# The broker refuses these for the record itself: sending the same record again cannot succeed.
# Anything else (no connection, timeouts, leader changes) is an outage that passes; so is an
# authorization error: an ACL that is being changed, or a credential being rotated, is put right
# by an operator, and the rows must then go, not be parked for good.
_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    aiokafka_errors.MessageSizeTooLargeError,
    aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.InvalidTopicError,
    aiokafka_errors.CorruptRecordException,
    aiokafka_errors.UnsupportedForMessageFormatError,
    TypeError,
    ValueError,
)


def is_record_error(exc: BaseException) -> bool:
    """True when the broker or the client refused a record for what it is (too large, a bad topic
    name), so the outbox relay should count it towards parking that row instead of waiting."""
    return isinstance(exc, _RECORD_ERRORS)
