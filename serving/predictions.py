"""The log of a served model's predictions (`fcl.predictions`), as the watcher keeps it with
`log_predictions=True`: each prediction gets a `prediction_id` the app sends its outcome with
(`fcl.outcomes`), and fcl joins the two into the live figures of the version that made it.

Logging never blocks `predict`: events wait in a bounded queue in memory and a task sends them in
batches (acks=all, idempotent). While the broker is away they wait; past `max_pending` the oldest
are dropped and counted (`dropped`), so an app never runs out of memory for its log."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fcl.contract.backoff import retrying

log = logging.getLogger("fcl.serving")

MAX_INPUT_BYTES = 256 * 1024  # inputs larger than this are logged as their digest only
BATCH = 500


def events(
    model_type: str, version: int, records: Sequence[Any], answers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One `predictions` event per answer, each with a new `prediction_id` (also added to its
    answer): the inputs are the answer's record (spending: its user's records)."""
    occurred_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if model_type == "spending":
        by_user: dict[str, list[Any]] = {}
        for r in records:
            by_user.setdefault(str(r.get("user_id")) if isinstance(r, dict) else "", []).append(r)
        inputs: list[Any] = [by_user.get(str(a.get("user_id")), []) for a in answers]
    else:
        inputs = list(records)
    found = []
    for answer, given in zip(answers, inputs, strict=True):
        prediction_id = str(uuid.uuid4())
        answer["prediction_id"] = prediction_id
        subject = _subject(given)
        event: dict[str, Any] = {
            "event_id": prediction_id,
            "prediction_id": prediction_id,
            "model_type": model_type,
            "version": version,
            "prediction": {k: v for k, v in answer.items() if k != "prediction_id"},
            "occurred_at": occurred_at,
        }
        if subject is not None:
            event["subject"] = subject
        encoded = json.dumps(given, separators=(",", ":"), sort_keys=True)
        if len(encoded) <= MAX_INPUT_BYTES:
            event["inputs"] = given
        else:
            event["inputs_digest"] = "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()
        found.append(event)
    return found


def shadow_events(
    version: int, served: Sequence[dict[str, Any]], answers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A challenger's `predictions` events for what the champion answered (`served`: its events):
    each under the served prediction's `prediction_id`, `shadow: true`, without the inputs (the
    served event has them). Spending answers are matched by user, the others by position."""
    if served and served[0]["model_type"] == "spending":
        by_user = {str(a.get("user_id")): a for a in answers}
        matched = [by_user.get(str(e["prediction"].get("user_id"))) for e in served]
    else:
        matched = list(answers) + [None] * (len(served) - len(answers))
    found = []
    for event, answer in zip(served, matched, strict=False):
        if answer is None:
            continue
        found.append(
            {
                "event_id": str(uuid.uuid4()),
                "prediction_id": event["prediction_id"],
                "model_type": event["model_type"],
                "version": version,
                "prediction": {k: v for k, v in answer.items() if k != "prediction_id"},
                "shadow": True,
                "occurred_at": event["occurred_at"],
                **({"subject": event["subject"]} if "subject" in event else {}),
            }
        )
    return found


def _subject(given: Any) -> str | None:
    first = given[0] if isinstance(given, list) and given else given
    user = first.get("user_id") if isinstance(first, dict) else None
    return user if isinstance(user, str) and user else None


class PredictionLog:
    """Sends prediction events to the topic from a bounded queue, in the background."""

    def __init__(
        self,
        *,
        topic: str,
        kafka_bootstrap: str,
        kafka_options: dict[str, Any] | None = None,
        max_pending: int = 10_000,
    ) -> None:
        self.topic = topic
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_options = kafka_options or {}
        self.max_pending = max_pending
        self.pending: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self.sent = 0
        self.dropped = 0
        self._in_flight = 0  # events taken from the queue and not yet acknowledged
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None

    def add(self, found: Sequence[dict[str, Any]]) -> None:
        """Queue events; never blocks, never raises for a full queue (the oldest go, counted)."""
        for event in found:
            if len(self.pending) >= self.max_pending:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append((event["model_type"].encode(), json.dumps(event, separators=(",", ":")).encode()))
        self._wake.set()

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka_bootstrap,
            **self.kafka_options,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="fcl-prediction-log")

    async def stop(self, *, flush_seconds: float = 5.0) -> None:
        """Send what is queued (for at most `flush_seconds`), then close."""
        if self._task is not None:
            try:
                async with asyncio.timeout(flush_seconds):
                    while (self.pending or self._in_flight) and not self._task.done():
                        self._wake.set()
                        await asyncio.sleep(0.05)
            except TimeoutError:
                log.warning("prediction log: %d prediction(s) not sent at stop", len(self.pending))
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _run(self) -> None:
        # the broker away: the batch waits at the front and is sent again whole, with the one
        # backoff (fcl records a prediction once by its event_id)
        backoff = retrying(what="prediction log", log=log, initial=0.5, maximum=30.0)
        while True:
            if not self.pending:
                self._wake.clear()
                try:
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                except TimeoutError:
                    continue
            await backoff(self._send_batch)

    async def _send_batch(self) -> None:
        batch = [self.pending.popleft() for _ in range(min(BATCH, len(self.pending)))]
        self._in_flight = len(batch)
        try:
            futures = [await self._producer.send(self.topic, key=key, value=value) for key, value in batch]
            await asyncio.gather(*futures)
        except Exception:
            self.pending.extendleft(reversed(batch))
            while len(self.pending) > self.max_pending:
                self.pending.popleft()
                self.dropped += 1
            log.warning("prediction log: %d waiting", len(self.pending))
            raise
        finally:
            self._in_flight = 0
        self.sent += len(batch)
