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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from opentelemetry.trace import SpanKind, StatusCode

from fcl.contract import model_types, tracing
from fcl.contract.backoff import retrying
from fcl.contract.enums import AdmissionOutcome
from fcl.contract.events import now
from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.storage.entities import DeadLetter, KeptInput, NewSampleBatch, TriggerRequest
from fcl.storage.errors import SchemaMismatch, wrap
from fcl.storage.stores import IngestStore, LiveIngest, NewOutcome, NewPrediction
from fcl.streams.parsing import (
    ParsedOutcome,
    ParsedPrediction,
    ParsedSamples,
    ParsedThreshold,
    RawMessage,
    Rejected,
    dead_letter,
    parse_outcome,
    parse_prediction,
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
    predictions_stored: int = 0
    outcomes_joined: int = 0  # pairs made (by an outcome, or by a prediction an outcome waited for)
    outcomes_waiting: int = 0  # outcomes whose prediction is unknown (yet)
    outcomes_repeated: int = 0
    dead_letters: list[str] = field(default_factory=list)  # reasons

    def add(self, other: BatchReport) -> None:
        self.jobs_created += other.jobs_created
        self.triggers_joined += other.triggers_joined
        self.duplicates += other.duplicates
        self.samples_stored += other.samples_stored
        self.crossings += other.crossings
        self.predictions_stored += other.predictions_stored
        self.outcomes_joined += other.outcomes_joined
        self.outcomes_waiting += other.outcomes_waiting
        self.outcomes_repeated += other.outcomes_repeated
        self.dead_letters.extend(other.dead_letters)


def _letters(rejected: Sequence[Rejected], max_bytes: int) -> list[DeadLetter]:
    """The dead letters of refused messages: the bounded letter for the topic, and the input as it
    arrived (its value up to `max_bytes`, FCL_MAX_EVENT_BYTES) kept for replay."""
    letters = []
    for r in rejected:
        event = dead_letter(r)
        value = r.message.value
        kept = KeptInput(
            letter_id=uuid.UUID(event.event_id),
            source_topic=r.message.topic,
            partition=r.message.partition,
            offset=r.message.offset,
            key=r.message.key,
            value=value[:max_bytes] if value is not None else None,
            value_bytes=len(value) if value is not None else 0,
            reason=r.reason,
        )
        letters.append(DeadLetter(event=(Topic.DEAD_LETTER, event.key, event.model_dump(mode="json")), kept=kept))
    return letters


class _Door:
    """What both ingestors share: the dead letters of what they refuse, each input kept up to
    FCL_MAX_EVENT_BYTES."""

    settings: Settings

    def _letters(self, rejected: Sequence[Rejected]) -> list[DeadLetter]:
        return _letters(rejected, self.settings.max_event_bytes)


class ThresholdIngestor(_Door):
    """dataset-threshold events become jobs (admission rules in storage), with `queued` events."""

    def __init__(self, store: IngestStore, settings: Settings, *, source: str = "kafka") -> None:
        self.store = store
        self.settings = settings
        self.source = source  # recorded with each trigger: which worker admitted it

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedThreshold | Rejected]:
        return [parse_threshold(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, items: Sequence[ParsedThreshold | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedThreshold)]
        rejected = [i for i in items if isinstance(i, Rejected)]
        report = BatchReport(dead_letters=[r.reason for r in rejected])
        # One `fcl.admit` span per trigger (a child of the producer's span when the record had a
        # traceparent); a new job keeps its context, and the trainer continues the trace.
        # Traces off (the default): no span at all on this hot path; a producer's traceparent is
        # still kept with the job and carried by its events.
        tracer = tracing.tracer()
        spans = [
            tracer.start_span(
                "fcl.admit",
                context=tracing.context_of(p.message.traceparent),
                kind=SpanKind.CONSUMER,
                attributes={
                    "fcl.event_id": p.event.event_id,
                    "fcl.dataset_id": p.event.dataset_id,
                    "fcl.model_type": p.model_type,
                    "messaging.destination.name": p.message.topic,
                    "messaging.kafka.offset": p.message.offset,
                },
            )
            for p in (parsed if tracing.enabled() else ())
        ]
        traces = [tracing.traceparent(span) for span in spans] or [None] * len(parsed)
        requests = [
            TriggerRequest(
                event_id=p.event.event_id,
                dataset_id=p.event.dataset_id,
                model_type=p.model_type,
                priority=p.event.priority,
                source=self.source,
                trace_context=trace or p.message.traceparent,
                reason={
                    "kind": "threshold",
                    **{
                        k: v
                        for k, v in (("sample_count", p.event.sample_count), ("threshold", p.event.threshold))
                        if v is not None
                    },
                },
            )
            for p, trace in zip(parsed, traces, strict=True)
        ]

        reasons: dict[int, str] = {}  # the triggers the store refused (a retried commit asks again)

        def refused(index: int, reason: str) -> DeadLetter:
            (letter,) = self._letters([Rejected(message=parsed[index].message, reason=reason)])
            reasons[index] = reason
            return letter

        try:
            admissions = await self.store.admit(
                requests, dead_letters=self._letters(rejected), letter_for_refused=refused
            )
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.end()
            raise
        report.dead_letters.extend(reasons.values())
        for admission in admissions:
            if admission is None:
                continue
            if admission.outcome is AdmissionOutcome.CREATED:
                report.jobs_created += 1
            elif admission.outcome is AdmissionOutcome.JOINED:
                report.triggers_joined += 1
            else:
                report.duplicates += 1
        for span, admission in zip(spans, admissions if spans else (), strict=True):
            if admission is None:
                span.set_status(StatusCode.ERROR, "refused")
            else:
                span.set_attributes({"fcl.job_id": str(admission.job_id), "fcl.admission": admission.outcome.value})
            span.end()
        return report


class SampleIngestor(_Door):
    """training-samples events are stored and counted; a counter reaching its threshold emits
    one dataset-threshold event (through the outbox, in the same transaction)."""

    def __init__(self, store: IngestStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.thresholds = {mt: settings.default_threshold(mt) for mt in model_types.names()}

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedSamples | Rejected]:
        return [parse_samples(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, items: Sequence[ParsedSamples | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedSamples)]
        rejected = [i for i in items if isinstance(i, Rejected)]
        first: dict[str, ParsedSamples] = {}
        for p in parsed:
            first.setdefault(p.event.event_id, p)

        def refused(event_id: str, reason: str) -> DeadLetter:
            (letter,) = self._letters([Rejected(message=first[event_id].message, reason=reason)])
            return letter

        if not parsed:
            await self.store.dead_letters(self._letters(rejected))
            return BatchReport(dead_letters=[r.reason for r in rejected])
        result = await self.store.ingest(
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
            priority=self.settings.default_priority,
            dead_letters=self._letters(rejected),
            letter_for_refused=refused,
        )
        return BatchReport(
            samples_stored=result.stored_samples,
            duplicates=len(result.duplicates),
            crossings=len(result.crossings),
            dead_letters=[r.reason for r in rejected] + list(result.refused.values()),
        )


class _LiveDoor(_Door):
    """What the predictions and outcomes ingestors share: a batch's valid records go to the store
    in one transaction with the dead letters of the refused ones, and of those the store refuses."""

    def __init__(self, store: IngestStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def _commit(
        self,
        parsed: Sequence[ParsedPrediction] | Sequence[ParsedOutcome],
        rejected: Sequence[Rejected],
        record: Callable[..., Awaitable[LiveIngest]],
        rows: Sequence[NewPrediction] | Sequence[NewOutcome],
    ) -> tuple[LiveIngest, BatchReport]:
        first: dict[str, RawMessage] = {}
        for p in parsed:
            first.setdefault(p.event.event_id, p.message)

        def refused(event_id: str, reason: str) -> DeadLetter:
            (letter,) = self._letters([Rejected(message=first[event_id], reason=reason)])
            return letter

        result = await record(rows, dead_letters=self._letters(rejected), letter_for_refused=refused)
        report = BatchReport(
            duplicates=result.duplicates,
            dead_letters=[r.reason for r in rejected] + list(result.refused.values()),
            outcomes_joined=result.joined,
            outcomes_waiting=result.waiting,
            outcomes_repeated=result.repeated,
        )
        return result, report


class PredictionIngestor(_LiveDoor):
    """predictions events are recorded, each joined with the outcome that waited for it, if any."""

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedPrediction | Rejected]:
        return [parse_prediction(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, items: Sequence[ParsedPrediction | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedPrediction)]
        rows = [
            NewPrediction(
                event_id=p.event.event_id,
                prediction_id=p.event.prediction_id,
                model_type=p.model_type,
                version=p.event.version,
                subject=p.event.subject,
                inputs=p.inputs,
                inputs_digest=p.event.inputs_digest,
                prediction=p.prediction,
                occurred_at=p.event.occurred_at or now(),
                shadow=p.event.shadow,
            )
            for p in parsed
        ]
        rejected = [i for i in items if isinstance(i, Rejected)]
        result, report = await self._commit(parsed, rejected, self.store.predictions, rows)
        report.predictions_stored = result.stored
        return report


class OutcomeIngestor(_LiveDoor):
    """outcomes events are joined with their predictions, or wait for them."""

    def parse(self, messages: Sequence[RawMessage]) -> list[ParsedOutcome | Rejected]:
        return [parse_outcome(m, max_bytes=self.settings.max_event_bytes) for m in messages]

    async def write(self, items: Sequence[ParsedOutcome | Rejected]) -> BatchReport:
        parsed = [i for i in items if isinstance(i, ParsedOutcome)]
        rows = [
            NewOutcome(
                event_id=p.event.event_id,
                prediction_id=p.event.prediction_id,
                model_type=p.event.model_type,
                outcome=p.outcome,
                occurred_at=p.event.occurred_at or now(),
            )
            for p in parsed
        ]
        rejected = [i for i in items if isinstance(i, Rejected)]
        return (await self._commit(parsed, rejected, self.store.outcomes, rows))[1]


P = TypeVar("P", ParsedThreshold, ParsedSamples, ParsedPrediction, ParsedOutcome)


class Ingestor(Protocol[P]):
    """Parses raw messages into `P` (or refusals) and commits a batch of them (one transaction of
    its store)."""

    store: IngestStore
    settings: Settings

    def parse(self, messages: Sequence[RawMessage]) -> list[P | Rejected]: ...

    async def write(self, items: Sequence[P | Rejected]) -> BatchReport: ...


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
    return await ingestor.write(items)


async def _write_dead_letter(ingestor: Ingestor[P], rejected: Rejected) -> BatchReport:
    await ingestor.store.dead_letters(_letters([rejected], ingestor.settings.max_event_bytes))
    return BatchReport(dead_letters=[rejected.reason])


async def _with_retries(
    work: Callable[[], Awaitable[BatchReport]],
    should_stop: Callable[[], bool],
    sleep: Callable[[float], Awaitable[None]],
) -> BatchReport | _Refused | None:
    """`work` committed, waiting out an unreachable database; `_Refused` when the database refuses
    it for a reason of its data; None when asked to stop before it could commit."""
    try:
        return await retrying(
            what="database unavailable",
            log=log,
            retry_on=lambda exc: (error := wrap(exc)).retriable and not isinstance(error, SchemaMismatch),
            should_stop=should_stop,
            sleep=sleep,
        )(work)
    except Exception as exc:  # classified below; only a schema mismatch leaves the agent
        error = wrap(exc)  # a StorageError as it is, a driver error wrapped
        if isinstance(error, SchemaMismatch):
            # Not the events' fault: dead-lettering them would lose valid events. The agent
            # stops, the process exits 1 (contract.lifeline) and its start names `fcl migrate`.
            raise error from exc
        if not error.retriable:
            log.warning("database refused a batch: %s", error)
            return _Refused(str(error)[:500])
        return None  # stopping while the database was unreachable: not acknowledged, redelivered
