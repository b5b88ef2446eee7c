"""What the agents do with a batch of raw messages, without Faust: parse and validate, then
commit everything the batch causes in ONE PostgreSQL transaction — jobs or samples, the outbox
rows of their events (queued status, threshold crossings) and dead letters for what was refused.

`commit_batch` returns only once that transaction committed: while the database is unreachable
it waits and retries, so the agent acknowledges a message only after its effect is durable.
A batch the database refuses for a reason of its data is split in halves until the message at
fault is alone, and that message is dead-lettered with the database's reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from contract import model_types
from contract.enums import AdmissionOutcome
from contract.events import DatasetThresholdEvent, rfc3339, threshold_event_id
from contract.settings import Settings
from contract.topics import Topic
from storage.db import Database, UnitOfWork
from storage.entities import AdmissionPolicy, NewSampleBatch, TriggerRequest
from storage.errors import SchemaMismatch, wrap
from storage.queue import JobQueue
from storage.repositories import OutboxRepository, SampleRepository
from streams.parsing import (
    ParsedSamples,
    ParsedThreshold,
    RawMessage,
    Rejected,
    dead_letter,
    parse_samples,
    parse_threshold,
)

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What one committed batch did (for logs, tests and benchmarks)."""

    jobs_created: int = 0
    triggers_joined: int = 0
    duplicates: int = 0
    samples_stored: int = 0
    crossings: int = 0
    dead_letters: list[str] = field(default_factory=list)  # reasons

    def add(self, other: BatchReport) -> None:
        self.jobs_created += other.jobs_created
        self.triggers_joined += other.triggers_joined
        self.duplicates += other.duplicates
        self.samples_stored += other.samples_stored
        self.crossings += other.crossings
        self.dead_letters.extend(other.dead_letters)


async def _dead_letters(session: UnitOfWork, rejected: Sequence[Rejected]) -> list[str]:
    letters = [dead_letter(r) for r in rejected]
    await OutboxRepository(session).add_many([(Topic.DEAD_LETTER, e.key, e.model_dump(mode="json")) for e in letters])
    return [r.reason for r in rejected]


class ThresholdIngestor:
    """dataset-threshold events become jobs (admission rules in storage), with `queued` events."""

    def __init__(self, db: Database, settings: Settings, *, source: str = "kafka") -> None:
        self.db = db
        self.settings = settings
        self.policy = AdmissionPolicy.from_settings(settings)
        self.source = source  # recorded with each trigger: which worker admitted it

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedThreshold | Rejected]:
        return [parse_threshold(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, session: UnitOfWork, items: Sequence[ParsedThreshold | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedThreshold)]
        report = BatchReport(dead_letters=await _dead_letters(session, [i for i in items if isinstance(i, Rejected)]))
        requests = [
            TriggerRequest(
                event_id=p.event.event_id,
                dataset_id=p.event.dataset_id,
                model_type=p.model_type,
                priority=p.event.priority,
                source=self.source,
            )
            for p in parsed
        ]
        for admission in await JobQueue(session, self.policy).admit(requests):
            if admission.outcome is AdmissionOutcome.CREATED:
                report.jobs_created += 1
            elif admission.outcome is AdmissionOutcome.JOINED:
                report.triggers_joined += 1
            else:
                report.duplicates += 1
        return report


class SampleIngestor:
    """training-samples events are stored and counted; a counter reaching its threshold emits
    one dataset-threshold event (through the outbox, in the same transaction)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.thresholds = {mt: settings.default_threshold(mt) for mt in model_types.names()}

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedSamples | Rejected]:
        return [parse_samples(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, session: UnitOfWork, items: Sequence[ParsedSamples | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedSamples)]
        rejected = [i for i in items if isinstance(i, Rejected)]
        report = BatchReport()
        if parsed:
            result = await SampleRepository(session).ingest(
                [
                    NewSampleBatch(
                        event_id=p.event.event_id,
                        dataset_id=p.event.dataset_id,
                        model_type=p.model_type,
                        samples=p.samples,
                        occurred_at=p.event.occurred_at,
                        shape=p.shape,
                    )
                    for p in parsed
                ],
                thresholds=self.thresholds,
            )
            rejected += [
                Rejected(message=p.message, reason=result.refused[p.event.event_id])
                for p in parsed
                if p.event.event_id in result.refused
            ]
            report.samples_stored = result.stored_samples
            report.duplicates = len(result.duplicates)
            events = []
            for c in result.crossings:
                event = DatasetThresholdEvent(
                    event_id=threshold_event_id(c.dataset_id, c.crossing),
                    dataset_id=c.dataset_id,
                    model_type=c.model_type,
                    sample_count=c.samples_since_training,
                    threshold=c.threshold,
                    priority=self.settings.default_priority,
                )
                payload = event.model_dump(mode="json") | {"occurred_at": rfc3339()}
                events.append((Topic.DATASET_THRESHOLD, c.dataset_id, payload))
            await OutboxRepository(session).add_many(events)
            report.crossings = len(result.crossings)
        report.dead_letters = await _dead_letters(session, rejected)
        return report


P = TypeVar("P", ParsedThreshold, ParsedSamples)


class Ingestor(Protocol[P]):
    """Parses raw messages into `P` (or refusals) and writes a batch of them in a unit of work."""

    db: Database

    def parse(self, messages: Sequence[RawMessage]) -> list[P | Rejected]: ...

    async def write(self, session: UnitOfWork, items: Sequence[P | Rejected]) -> BatchReport: ...


async def commit_batch(
    ingestor: Ingestor[P],
    messages: Sequence[RawMessage],
    *,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> BatchReport | None:
    """Commit the batch's effects; None only when asked to stop before it could commit (the
    messages are then not acknowledged and will be redelivered)."""
    return await commit_parsed(ingestor, ingestor.parse(messages), should_stop=should_stop, sleep=sleep)


async def commit_parsed(
    ingestor: Ingestor[P],
    items: Sequence[P | Rejected],
    *,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> BatchReport | None:
    """`commit_batch` of messages parsed already (the agents parse each one as it is read, while
    the previous batch commits)."""
    return await _commit(ingestor, items, should_stop, sleep)


async def _commit(
    ingestor: Ingestor[P],
    items: Sequence[P | Rejected],
    should_stop: Callable[[], bool],
    sleep: Callable[[float], Awaitable[None]],
) -> BatchReport | None:
    """Commit `items`; when the database refuses them for a reason of their data, commit each half
    on its own (so one event at fault costs about 2·log2(n) transactions, not n) down to the one
    event at fault, which is dead-lettered with the database's reason."""
    outcome = await _with_retries(functools.partial(_write, ingestor, items), should_stop, sleep)
    if not isinstance(outcome, _Refused):
        return outcome
    if len(items) == 1:
        rejected = Rejected(message=items[0].message, reason=f"refused by the database: {outcome.reason}")
        letter = await _with_retries(functools.partial(_write_dead_letter, ingestor, rejected), should_stop, sleep)
        if isinstance(letter, _Refused):
            raise RuntimeError(f"the database refused a dead letter: {letter.reason}")
        return letter
    report = BatchReport()
    middle = len(items) // 2
    for half in (items[:middle], items[middle:]):
        part = await _commit(ingestor, half, should_stop, sleep)
        if part is None:
            return None
        report.add(part)
    return report


@dataclass(frozen=True)
class _Refused:
    reason: str


async def _write(ingestor: Ingestor[P], items: Sequence[P | Rejected]) -> BatchReport:
    async with ingestor.db.transaction() as session:
        return await ingestor.write(session, items)


async def _write_dead_letter(ingestor: Ingestor[P], rejected: Rejected) -> BatchReport:
    async with ingestor.db.transaction() as session:
        return BatchReport(dead_letters=await _dead_letters(session, [rejected]))


async def _with_retries(
    work: Callable[[], Awaitable[BatchReport]],
    should_stop: Callable[[], bool],
    sleep: Callable[[float], Awaitable[None]],
) -> BatchReport | _Refused | None:
    delay = 0.1
    while True:
        try:
            return await work()
        except Exception as exc:  # classified below; only a schema mismatch leaves the agent
            error = wrap(exc)  # a StorageError as it is, a driver error wrapped
            if isinstance(error, SchemaMismatch):
                # Not the events' fault: dead-lettering them would lose valid events. The agent
                # stops, the process exits 1 (contract.lifeline) and its start names `fcl migrate`.
                raise error from exc
            if not error.retriable:
                log.warning("database refused a batch: %s", error)
                return _Refused(str(error)[:500])
            if should_stop():
                return None
            log.warning("database unavailable (%s); retrying in %.1fs", error, delay)
            await sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
