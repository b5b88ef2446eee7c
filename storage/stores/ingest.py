"""`IngestStore`: what the streams service does with the database, each method one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fcl.storage.datasets import (
    MODEL_TYPES_SQL,
    DatasetRepository,
    SampleRepository,
    threshold_events,
    trigger_namespace,
)
from fcl.storage.db import Database, Statement
from fcl.storage.deadletters import write_dead_letters
from fcl.storage.entities import (
    Admission,
    AdmissionPolicy,
    DeadLetter,
    NewSampleBatch,
    SampleIngest,
    TriggerRequest,
)
from fcl.storage.live import (
    LiveIngest,
    LiveRepository,
    NewOutcome,
    NewPrediction,
)
from fcl.storage.outbox import OutboxRepository
from fcl.storage.queue import JobQueue
from fcl.storage.queue.admission import admit_on

MODEL_TYPES = Statement(MODEL_TYPES_SQL)


def refusals(requests: Sequence[TriggerRequest], kinds: dict[str, str]) -> dict[int, str]:
    """The triggers for a dataset that holds samples of another model type (`kinds`: each
    existing dataset's), by index, with the reason."""
    return {
        i: f"dataset {r.dataset_id!r} holds {kinds[r.dataset_id]} samples, not {r.model_type}"
        for i, r in enumerate(requests)
        if kinds.get(r.dataset_id, r.model_type) != r.model_type
    }


class IngestStore:
    """What the streams agents commit: each method one transaction, dead letters included."""

    def __init__(self, db: Database, policy: AdmissionPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or AdmissionPolicy()

    async def admit(
        self,
        requests: Sequence[TriggerRequest],
        *,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[int, str], DeadLetter],
    ) -> list[Admission | None]:
        """Admit a batch of triggers by the admission rules and write the batch's dead letters.
        A trigger for a dataset that holds samples of another model type is refused (None in its
        place) and dead-lettered with the reason (`letter_for_refused(index, reason)`): its job
        would load the whole other dataset only to fail."""
        if requests and not dead_letters:
            # The common batch: no dead letters to write; on a plain connection, no session.
            async with self.db.plain_transaction() as conn:
                ids = sorted({r.dataset_id for r in requests})
                kinds = {r["dataset_id"]: r["model_type"] for r in await conn.fetch(MODEL_TYPES.sql, ids)}
                if not refusals(requests, kinds):
                    return list(await admit_on(conn, requests, self.policy))
        async with self.db.transaction() as s:
            kinds = await DatasetRepository(s).model_types([r.dataset_id for r in requests]) if requests else {}
            refused = refusals(requests, kinds)
            await write_dead_letters(
                s, [*dead_letters, *(letter_for_refused(i, reason) for i, reason in refused.items())]
            )
            admitted = iter(
                await JobQueue(s, self.policy).admit([r for i, r in enumerate(requests) if i not in refused])
            )
            return [None if i in refused else next(admitted) for i in range(len(requests))]

    async def ingest(
        self,
        batches: Sequence[NewSampleBatch],
        *,
        thresholds: dict[str, int],
        priority: int,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> SampleIngest:
        """Store and count sample batches, announce each threshold crossed (a `dataset-threshold`
        event in the outbox), and write the batch's dead letters and one for each batch the
        dataset refused (`letter_for_refused(event_id, reason)`)."""
        async with self.db.transaction() as s:
            result = await SampleRepository(s).ingest(batches, thresholds=thresholds)
            refused = [letter_for_refused(event, reason) for event, reason in result.refused.items()]
            # one statement for the crossings' events and the letters, in that order
            crossed = (
                threshold_events(result.crossings, priority=priority, namespace=await trigger_namespace(s))
                if result.crossings
                else []
            )
            await OutboxRepository(s).add_many(crossed)
            await write_dead_letters(s, [*dead_letters, *refused])
            return result

    async def predictions(
        self,
        predictions: Sequence[NewPrediction],
        *,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> LiveIngest:
        """Record predictions (joining the outcomes that waited for them) and the batch's dead
        letters, one for each prediction of a version that was never recorded."""
        return await self._live(lambda live: live.record_predictions(predictions), dead_letters, letter_for_refused)

    async def outcomes(
        self,
        outcomes: Sequence[NewOutcome],
        *,
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> LiveIngest:
        """Join outcomes with their predictions (or keep them waiting) and write the batch's dead
        letters, one for each outcome that names another model type than its prediction's."""
        return await self._live(lambda live: live.record_outcomes(outcomes), dead_letters, letter_for_refused)

    async def _live(
        self,
        record: Callable[[LiveRepository], Awaitable[LiveIngest]],
        dead_letters: Sequence[DeadLetter],
        letter_for_refused: Callable[[str, str], DeadLetter],
    ) -> LiveIngest:
        async with self.db.transaction() as s:
            result = await record(LiveRepository(s))
            refused = [letter_for_refused(event, reason) for event, reason in result.refused.items()]
            await write_dead_letters(s, [*dead_letters, *refused])
            return result

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        async with self.db.transaction() as s:
            await write_dead_letters(s, letters)
