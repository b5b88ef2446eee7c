"""A small producer client for other Python services: samples and threshold events in the
contract's shapes, validated before they are sent.

    async with FclProducer(settings) as producer:
        await producer.send_samples("fincoach-spending", "spending", [{"user_id": "u1", ...}])
        await producer.send_threshold("fincoach-reco", "recommendation", priority=7)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer

from fcl.contract import model_types
from fcl.contract.events import DatasetThresholdEvent, TrainingSamplesEvent, rfc3339
from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.security import client_options, start_or_refuse


class FclProducer:
    def __init__(self, settings: Settings, *, linger_ms: int = 0) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=linger_ms,
            enable_idempotence=True,
            **client_options(settings),
        )

    async def __aenter__(self) -> FclProducer:
        await start_or_refuse(self.settings, self._producer.start, self._producer.stop)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    @staticmethod
    def _model_type(model_type: str) -> str:
        parsed = model_types.parse(model_type)
        if parsed is None:
            raise ValueError(f"unknown model type {model_type!r} (known: {model_types.known()})")
        return parsed

    def samples_event(
        self, dataset_id: str, model_type: str, samples: Sequence[dict[str, Any]], *, event_id: str | None = None
    ) -> dict[str, Any]:
        shape = model_types.spec(self._model_type(model_type)).sample
        checked = [shape.model_validate(s).model_dump(mode="json") for s in samples]
        event = TrainingSamplesEvent(
            event_id=event_id or str(uuid.uuid4()), dataset_id=dataset_id, model_type=model_type, samples=checked
        )
        return event.model_dump(mode="json", exclude={"occurred_at"}) | {"occurred_at": rfc3339()}

    def threshold_event(
        self,
        dataset_id: str,
        model_type: str,
        *,
        priority: int = 5,
        sample_count: int | None = None,
        threshold: int | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        self._model_type(model_type)
        event = DatasetThresholdEvent(
            event_id=event_id or str(uuid.uuid4()),
            dataset_id=dataset_id,
            model_type=model_type,
            priority=priority,
            sample_count=sample_count,
            threshold=threshold,
        )
        return event.model_dump(mode="json", exclude={"occurred_at"}) | {"occurred_at": rfc3339()}

    async def send_event(self, topic: Topic, key: str, event: dict[str, Any], *, wait: bool = True) -> None:
        value = json.dumps(event, separators=(",", ":")).encode()
        future = await self._producer.send(topic.full_name(self.settings.topic_prefix), value, key=key.encode())
        if wait:
            await future

    async def send_samples(
        self,
        dataset_id: str,
        model_type: str,
        samples: Sequence[dict[str, Any]],
        *,
        event_id: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        event = self.samples_event(dataset_id, model_type, samples, event_id=event_id)
        await self.send_event(Topic.TRAINING_SAMPLES, dataset_id, event, wait=wait)
        return event

    async def send_threshold(
        self,
        dataset_id: str,
        model_type: str,
        *,
        priority: int = 5,
        sample_count: int | None = None,
        threshold: int | None = None,
        event_id: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        event = self.threshold_event(
            dataset_id, model_type, priority=priority, sample_count=sample_count, threshold=threshold, event_id=event_id
        )
        await self.send_event(Topic.DATASET_THRESHOLD, dataset_id, event, wait=wait)
        return event

    async def flush(self) -> None:
        await self._producer.flush()
