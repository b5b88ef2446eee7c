"""The join of predictions and outcomes in PostgreSQL (storage.live), rule by rule: whichever
arrives second makes the pair, the first outcome is joined and later ones counted, a redelivered
record changes nothing, an outcome of another model type never joins, and the retention forgets
the oldest of both. Then the live evaluation of a worker over those pairs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from fcl.storage.db import Database
from fcl.storage.entities import EndedAttempt
from fcl.storage.live import LiveRepository, NewOutcome, NewPrediction
from fcl.storage.queue import JobQueue
from fcl.storage.retry import RetryDecision
from fcl.storage.stores import ApiStore, WorkerStore
from fcl.worker import live
from tests import factories
from tests.integration.streams_support import rows, scalar


def _prediction(
    version: int, pid: str, probability: float = 0.5, event_id: str | None = None, *, shadow: bool = False
) -> NewPrediction:
    return NewPrediction(
        event_id=event_id or f"p-{pid}",
        prediction_id=pid,
        model_type="goal",
        version=version,
        subject="u1",
        inputs=json.dumps({"user_id": "u1", "features": {"x": 1.0}}),
        inputs_digest=None,
        prediction=json.dumps({"probability": probability}),
        occurred_at=datetime.now(UTC),
        shadow=shadow,
    )


def _outcome(pid: str, event_id: str, achieved: bool, model_type: str | None = None, minutes: int = 0) -> NewOutcome:
    return NewOutcome(
        event_id=event_id,
        prediction_id=pid,
        model_type=model_type,
        outcome=json.dumps({"achieved": achieved}),
        occurred_at=datetime.now(UTC) + timedelta(minutes=minutes),
    )


async def test_whichever_arrives_second_makes_the_pair_once(own_db: Database) -> None:
    version = (await factories.record_version(own_db, "goal")).job.model_version
    assert version is not None
    async with own_db.transaction() as s:
        repo = LiveRepository(s)
        # outcomes first: two for p1 (the earlier joins, the other is repeated), one of another type
        waiting = await repo.record_outcomes(
            [
                _outcome("p1", "o1-late", False, minutes=5),
                _outcome("p1", "o1", True),
                _outcome("p1", "o1", True),  # the same record twice in a batch: once
                _outcome("p2", "o2-spend", True, model_type="spending"),
            ]
        )
        assert (waiting.waiting, waiting.duplicates, waiting.joined) == (3, 1, 0)
        again = await repo.record_outcomes([_outcome("p1", "o1", True)])  # redelivered: nothing new
        assert (again.waiting, again.duplicates) == (0, 1)
        made = await repo.record_predictions(
            [_prediction(version, "p1"), _prediction(version, "p2"), _prediction(version + 9, "p3")]
        )
        assert made.stored == 2 and made.joined == 1 and list(made.refused) == ["p-p3"]
        assert "goal has no version" in made.refused["p-p3"]
        # redelivered prediction, and another event claiming the same prediction id: one row
        dup = await repo.record_predictions([_prediction(version, "p1"), _prediction(version, "p1", event_id="other")])
        assert (dup.stored, dup.duplicates) == (0, 2)
        # an outcome now: p2's own joins; p1's third is repeated; p1's joined one redelivered is not
        later = await repo.record_outcomes(
            [_outcome("p2", "o2", False), _outcome("p1", "o1-third", False), _outcome("p1", "o1", True)]
        )
        assert (later.joined, later.repeated, later.duplicates) == (1, 1, 1)
        mismatch = await repo.record_outcomes([_outcome("p2", "o2-x", True, model_type="recommendation")])
        assert "is a goal prediction, not recommendation" in mismatch.refused["o2-x"]
    got = {
        r.prediction_id: r
        for r in await rows(
            own_db, "SELECT prediction_id, outcome, outcome_event_id, repeated_outcomes FROM predictions ORDER BY 1"
        )
    }
    assert got["p1"].outcome == {"achieved": True} and got["p1"].outcome_event_id == "o1"
    assert got["p1"].repeated_outcomes == 2  # o1-late (waited) and o1-third
    assert got["p2"].outcome == {"achieved": False} and got["p2"].repeated_outcomes == 0
    # the spending outcome for p2 never joined a goal prediction: it still waits (unknown)
    assert await scalar(own_db, "SELECT count(*) FROM waiting_outcomes") == 1

    # a worker's round of the live evaluation, then nothing until `every` has passed
    store = WorkerStore(own_db)
    assert await live.evaluate(store, every=60) == 2  # one version, two windows
    assert await live.evaluate(store, every=60) == 0  # another worker's round, in effect
    async with own_db.transaction() as s:
        figures, _ = await LiveRepository(s).figures("goal", version, "hour") or ({}, None)
    assert figures["predictions"] == 2 and figures["with_outcome"] == 2 and figures["repeated_outcomes"] == 2
    # the outcome still waiting names spending: unknown for spending, not for goal
    assert figures["unknown_outcomes"] == 0 and figures["metrics"]["pairs"] == 2
    assert figures["metrics"]["roc_auc"] == 0.5  # two predictions of 0.5: one reached, one not

    # the retention: what was received before the limit goes, with the versions no prediction names
    await scalar(
        own_db, "UPDATE predictions SET received_at = now() - interval '40 days' WHERE prediction_id = 'p1' RETURNING 1"
    )
    await scalar(own_db, "UPDATE waiting_outcomes SET received_at = now() - interval '40 days' RETURNING 1")
    assert await store.forget_predictions(older_than=timedelta(days=30)) == 2
    assert [r.prediction_id for r in await rows(own_db, "SELECT prediction_id FROM predictions")] == ["p2"]
    await scalar(own_db, "UPDATE live_versions SET last_prediction_at = now() - interval '40 days' RETURNING 1")
    await store.forget_predictions(older_than=timedelta(days=30))
    assert await scalar(own_db, "SELECT count(*) FROM live_figures") == 0


async def test_a_champion_that_falls_short_live_is_retrained_once_with_its_reason(own_db: Database) -> None:
    recorded = await factories.record_version(own_db, "goal", auc=0.8)
    version = recorded.job.model_version
    assert version is not None and recorded.promoted  # the champion
    dataset = recorded.job.dataset_id
    async with own_db.transaction() as s:
        repo = LiveRepository(s)
        await repo.record_predictions([_prediction(version, f"q{i}", probability=0.5) for i in range(4)])
        await repo.record_outcomes([_outcome(f"q{i}", f"oq{i}", achieved=i % 2 == 0) for i in range(4)])
    store = WorkerStore(own_db)
    triggers = live.Triggers(live_drops={"goal": 0.1}, min_pairs=4, max_ages={"goal": 0.001})
    assert await live.evaluate(store, every=0.001, triggers=triggers) == 2
    # the live AUC (0.5, every probability the same) is 37.5 % below the validated 0.8: the hour and
    # the day window each fire once; the first queues a job for the champion's dataset, the second
    # joins it; the champion's age fired too (a limit of a millisecond)
    fired = await rows(own_db, 'SELECT "window", kind, figures, job_id FROM retrain_reasons ORDER BY kind, "window"')
    assert [(r.window, r.kind) for r in fired] == [("-", "champion_age"), ("day", "live_drop"), ("hour", "live_drop")]
    assert len({r.job_id for r in fired}) == 1 and fired[0].job_id is not None
    drop = fired[1].figures
    assert drop["metric"] == "roc_auc" and drop["live"] == 0.5 and drop["validated"] == 0.8
    assert drop["drop"] == pytest.approx((0.8 - 0.5) / 0.8) and drop["pairs"] == 4 and drop["version"] == version
    job = (
        await rows(
            own_db, "SELECT dataset_id, reason, trigger_count FROM training_jobs WHERE id = :j", j=fired[0].job_id
        )
    )[0]
    assert job.dataset_id == dataset and job.trigger_count == 3
    assert job.reason["kind"] == "champion_age"  # the first trigger's reason is the job's
    triggers_of_job = await rows(
        own_db, "SELECT event_id, reason FROM job_triggers WHERE job_id = :j ORDER BY event_id", j=fired[0].job_id
    )
    assert [t.event_id for t in triggers_of_job] == [
        f"live:champion_age:goal:{version}:-",
        f"live:live_drop:goal:{version}:day",
        f"live:live_drop:goal:{version}:hour",
    ]
    queued = await rows(
        own_db,
        "SELECT payload FROM outbox WHERE topic = 'training-status' AND payload->>'job_id' = :j",
        j=str(fired[0].job_id),
    )
    assert [q.payload["reason"]["kind"] for q in queued] == ["champion_age"]
    # the next rounds fire nothing again: once per version, window and kind
    assert await live.evaluate(store, every=0.001, triggers=triggers) == 2
    assert await scalar(own_db, "SELECT count(*) FROM retrain_reasons") == 3
    assert await scalar(own_db, "SELECT count(*) FROM training_jobs WHERE status = 'queued'") == 1
    # the attempt's history row carries the job's reason
    job_row = await factories.lease(own_db, fired[0].job_id)
    assert job_row.reason is not None and job_row.reason["kind"] == "champion_age"
    async with own_db.transaction() as s:
        await JobQueue(s).fail(
            job_row.lease,
            EndedAttempt(started_at=datetime.now(UTC), duration_seconds=1.0, error_type="X", message="refused"),
            RetryDecision(retry=False, reason="not retriable"),
        )
    history = await rows(own_db, "SELECT reason FROM training_events WHERE job_id = :j", j=fired[0].job_id)
    assert [h.reason["kind"] for h in history] == ["champion_age"]


async def test_a_prediction_and_its_outcome_committed_at_the_same_time_still_pair(own_db: Database) -> None:
    version = (await factories.record_version(own_db, "goal")).job.model_version
    assert version is not None
    async with own_db.transaction() as a:
        await LiveRepository(a).record_outcomes([_outcome("px", "ox", True)])  # waits: no prediction yet

        async def predict() -> int:
            async with own_db.transaction() as b:
                return (await LiveRepository(b).record_predictions([_prediction(version, "px")])).joined

        task = asyncio.create_task(predict())
        await asyncio.sleep(0.5)
        # without the join lock the prediction would commit now, seeing no waiting outcome, and the
        # outcome would wait for ever
        assert not task.done()
    assert await task == 1
    assert await scalar(own_db, "SELECT outcome_event_id FROM predictions WHERE prediction_id = 'px'") == "ox"
    assert await scalar(own_db, "SELECT count(*) FROM waiting_outcomes") == 0


async def test_a_shadow_challenger_is_compared_with_the_champion_on_the_same_outcomes(own_db: Database) -> None:
    """A challenger's predictions are kept under the served predictions' ids (one each, whatever is
    redelivered), never joined by themselves: the evaluation pairs them with the served ones and
    their outcomes, computes both versions' figures over exactly those pairs, and says which did
    better. Predictions the challenger did not score, and outcomes it has none for, are not in the
    comparison. Clearing the challenger drops its comparisons."""
    champion = (await factories.record_version(own_db, "goal", auc=0.8)).job.model_version
    challenger = (await factories.record_version(own_db, "goal", passed=False)).job.model_version
    assert champion is not None and challenger is not None
    store = WorkerStore(own_db)
    async with own_db.transaction() as s:
        repo = LiveRepository(s)
        assert await repo.set_shadow("goal", challenger + 50, "test") is None  # no such version
        assert (await repo.set_shadow("goal", challenger, "test")) is not None
        # served: 6 predictions; achieved when i is even. The champion answers 0.5 for all (no skill),
        # the challenger 0.9 for the achieved and 0.1 for the others (perfect), for 4 of them only.
        await repo.record_predictions([_prediction(champion, f"s{i}", 0.5) for i in range(6)])
        made = await repo.record_predictions(
            [_prediction(challenger, f"s{i}", 0.9 if i % 2 == 0 else 0.1, f"sh-{i}", shadow=True) for i in range(4)]
            + [_prediction(challenger, "s0", 0.5, "sh-0", shadow=True)]  # redelivered: once
            + [_prediction(challenger, "s1", 0.5, "sh-1b", shadow=True)]  # a second one for s1: refused as duplicate
            + [_prediction(challenger + 50, "s2", 0.5, "sh-x", shadow=True)]  # an unknown version: refused
        )
        assert (made.stored, made.duplicates, list(made.refused)) == (4, 2, ["sh-x"])
        # the outcomes of the served predictions; s3 has none yet
        await repo.record_outcomes([_outcome(f"s{i}", f"os{i}", achieved=i % 2 == 0) for i in (0, 1, 2, 4, 5)])
    assert await scalar(own_db, "SELECT count(*) FROM predictions WHERE prediction_id LIKE 's%'") == 6
    assert await live.evaluate(store, every=0.001) == 2 + 2  # the champion's windows, and the comparison's
    [hour] = await rows(own_db, "SELECT figures FROM shadow_figures WHERE model_type = 'goal' AND \"window\" = 'hour'")
    f = hour.figures
    assert (f["predictions"], f["with_outcome"], f["evaluated_pairs"]) == (4, 3, 4)  # s0-s3 scored, s3 no outcome
    assert f["champion"]["version"] == champion and f["challenger"]["version"] == challenger
    assert f["champion"]["metrics"]["pairs"] == 3 and f["challenger"]["metrics"]["pairs"] == 3
    assert f["champion"]["metrics"]["roc_auc"] == 0.5 and f["challenger"]["metrics"]["roc_auc"] == 1.0
    assert f["comparison"]["better"] == "challenger" and f["comparison"]["gain"] == pytest.approx(1.0)
    api = ApiStore(own_db)
    shadow, found = await api.shadow("goal", "day")
    assert shadow is not None and shadow.version == challenger and shadow.actor == "test" and found is not None
    assert await api.clear_shadow("goal") == challenger
    assert await api.shadow("goal", "day") == (None, None)
    assert await api.clear_shadow("goal") is None
    assert await live.evaluate(store, every=0.001) == 2  # no challenger: no comparison
    # the retention forgets shadow predictions with the served ones
    async with own_db.transaction() as s:
        await s.execute(text("UPDATE shadow_predictions SET received_at = now() - interval '40 days'"))
        assert await LiveRepository(s).forget(older_than=timedelta(days=30)) >= 4
    assert await scalar(own_db, "SELECT count(*) FROM shadow_predictions") == 0
