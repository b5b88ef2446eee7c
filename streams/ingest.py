"""What the agents do with a batch of raw messages, without Faust: parse and validate, then
commit everything the batch causes in ONE PostgreSQL transaction — jobs or samples, the outbox
rows of their events (queued status, threshold crossings) and dead letters for what was refused.

`commit_batch` returns only once that transaction committed: while the database is unreachable
it waits and retries, so the agent acknowledges a message only after its effect is durable.
A batch the database refuses for a reason of its data is split and committed message by
message, and a single message it still refuses is dead-lettered with the database's reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from fcl.settings import Settings
from storage.db import Database, is_retriable
from storage.entities import Admission, AdmissionOutcome, NewSampleBatch, TriggerRequest
from storage.repositories import JobRepository, OutboxRepository, SampleRepository
from streams.events import (
    DatasetThresholdEvent,
    ParsedSamples,
    ParsedThreshold,
    RawMessage,
    Rejected,
    dead_letter,
    parse_samples,
    parse_threshold,
    queued_status,
    rfc3339,
    threshold_event_id,
)
from streams.topics import Topic

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


async def _dead_letters(session: AsyncSession, rejected: Sequence[Rejected]) -> list[str]:
    letters = [dead_letter(r) for r in rejected]
    await OutboxRepository(session).add_many([(Topic.DEAD_LETTER, e.key, e.model_dump(mode="json")) for e in letters])
    return [r.reason for r in rejected]


async def admit_requests(
    session: AsyncSession, requests: Sequence[TriggerRequest], settings: Settings, report: BatchReport | None = None
) -> list[Admission]:
    """Admit trigger requests by the contract's rules and queue a `queued` status event for each
    job created, in the caller's transaction."""
    report = report if report is not None else BatchReport()
    jobs = JobRepository(session, ageing_step=timedelta(seconds=settings.queue_ageing_seconds))
    statuses = []
    admissions = await jobs.admit(requests)
    for admission in admissions:
        if admission.outcome is AdmissionOutcome.CREATED:
            report.jobs_created += 1
            status = queued_status(
                job_id=admission.job_id,
                dataset_id=admission.request.dataset_id,
                model_type=admission.request.model_type,
                priority=admission.priority,
                attempts=admission.attempts,
            )
            statuses.append((Topic.TRAINING_STATUS, status.job_id, status.model_dump(mode="json")))
        elif admission.outcome is AdmissionOutcome.JOINED:
            report.triggers_joined += 1
        else:
            report.duplicates += 1
    await OutboxRepository(session).add_many(statuses)
    return admissions


class ThresholdIngestor:
    """dataset-threshold events become jobs (admission rules in storage), with `queued` events."""

    def __init__(self, db: Database, settings: Settings, *, source: str = "kafka") -> None:
        self.db = db
        self.settings = settings
        self.source = source  # recorded with each trigger: which worker admitted it

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedThreshold | Rejected]:
        return [parse_threshold(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, session: AsyncSession, items: Sequence[ParsedThreshold | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedThreshold)]
        report = BatchReport(dead_letters=await _dead_letters(session, [i for i in items if isinstance(i, Rejected)]))
        requests = [
            TriggerRequest(
                event_id=p.event.event_id,
                dataset_id=p.event.dataset_id,
                model_type=p.model_type.value,
                priority=p.event.priority,
                source=self.source,
                max_attempts=self.settings.attempts_for(p.model_type.value),
            )
            for p in parsed
        ]
        await admit_requests(session, requests, self.settings, report)
        return report


class SampleIngestor:
    """training-samples events are stored and counted; a counter reaching its threshold emits
    one dataset-threshold event (through the outbox, in the same transaction)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.thresholds = {
            mt: settings.default_threshold(mt) for mt in ("recommendation", "segmentation", "spending", "goal")
        }

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedSamples | Rejected]:
        return [parse_samples(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, session: AsyncSession, items: Sequence[ParsedSamples | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedSamples)]
        rejected = [i for i in items if isinstance(i, Rejected)]
        report = BatchReport()
        if parsed:
            result = await SampleRepository(session).ingest(
                [
                    NewSampleBatch(
                        event_id=p.event.event_id,
                        dataset_id=p.event.dataset_id,
                        model_type=p.model_type.value,
                        samples=p.samples,
                        occurred_at=p.event.occurred_at,
                    )
                    for p in parsed
                ],
                thresholds=self.thresholds,
            )
            rejected += [
                Rejected(
                    message=p.message,
                    reason=f"dataset {p.event.dataset_id!r} holds "
                    f"{result.mismatched[p.event.event_id]} samples, not {p.model_type}",
                )
                for p in parsed
                if p.event.event_id in result.mismatched
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


Ingestor = ThresholdIngestor | SampleIngestor


async def commit_batch(
    ingestor: Ingestor,
    messages: Sequence[RawMessage],
    *,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> BatchReport | None:
    """Commit the batch's effects; None only when asked to stop before it could commit (the
    messages are then not acknowledged and will be redelivered)."""
    items = ingestor.parse(messages)
    outcome = await _with_retries(lambda: _write(ingestor, items), should_stop, sleep)
    if not isinstance(outcome, _Refused):
        return outcome
    # The database refused the batch for a reason of its data: find the message(s) at fault.
    report = BatchReport()
    for item in items:
        single = await _with_retries(lambda: _write(ingestor, [item]), should_stop, sleep)
        if isinstance(single, _Refused):
            rejected = Rejected(message=item.message, reason=f"refused by the database: {single.reason}")
            single = await _with_retries(lambda: _write_dead_letter(ingestor, rejected), should_stop, sleep)
        if single is None or isinstance(single, _Refused):
            return None
        report.add(single)
    return report


@dataclass(frozen=True)
class _Refused:
    reason: str


async def _write(ingestor: Ingestor, items: Sequence[object]) -> BatchReport:
    async with ingestor.db.transaction() as session:
        return await ingestor.write(session, items)  # type: ignore[arg-type]


async def _write_dead_letter(ingestor: Ingestor, rejected: Rejected) -> BatchReport:
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
        except Exception as exc:  # noqa: BLE001 - classified below; nothing escapes the agent
            if not is_retriable(exc):
                log.warning("database refused a batch: %s", exc)
                return _Refused(str(getattr(exc, "orig", exc)).splitlines()[0][:500])
            if should_stop():
                return None
            log.warning("database unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
            await sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
