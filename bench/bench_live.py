"""Predictions and outcomes into PostgreSQL as `fcl streams` writes them (IngestStore, batches of
FCL_STREAM_BATCH_MAX = 500, each one transaction with its dead letters), against a bare multi-row
INSERT of the same rows into a table of the same columns and indexes, in the same run:

  - predictions/s recorded (idempotent by event and prediction id, the outcomes that waited taken);
  - outcomes/s joined with their predictions (each outcome written into its prediction's row);
  - the bare INSERT's rows/s of each, and the ratio.

Then the live evaluation: one worker round (2 windows) over the version's predictions, in seconds.
Each figure is the median (min-max) of --runs (3) on a scratch database of the local stack.

    .venv/bin/python bench/bench_live.py [--predictions 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from _common import ScratchDatabases, completed_attempt, dsn, spread, stack_settings

from fcl.storage.db import Database
from fcl.storage.entities import AdmissionPolicy, NewSampleBatch, TriggerRequest
from fcl.storage.migrate import upgrade
from fcl.storage.stores import IngestStore, NewOutcome, NewPrediction, WorkerStore
from fcl.worker import live

BATCH = 500
FEATURES = ["target_amount", "months", "monthly_needed", "monthly_income", "monthly_spend", "savings_rate"]


def _no_letter(*_: Any) -> Any:
    raise AssertionError("nothing is refused in this benchmark")


async def _version(url: str) -> int:
    """A recorded goal version, as a worker records it."""
    db = Database(url, pool_size=2)
    try:
        ingest, worker = IngestStore(db, AdmissionPolicy()), WorkerStore(db)
        sample = json.dumps({"user_id": "u", "goal_id": "g", "features": {"x": 1.0}, "achieved": True})
        await ingest.ingest(
            [
                NewSampleBatch(
                    event_id="e", dataset_id="d", model_type="goal", samples=[sample], occurred_at=None, shape={}
                )
            ],
            thresholds={"goal": 10**9},
            priority=5,
            dead_letters=[],
            letter_for_refused=_no_letter,
        )
        await ingest.admit(
            [TriggerRequest(event_id="t", dataset_id="d", model_type="goal", priority=5, source="bench")],
            dead_letters=[],
            letter_for_refused=_no_letter,
        )
        job = await worker.claim("bench", lease=timedelta(minutes=5), caps={})
        assert job is not None and job.lease is not None
        transition = await worker.complete(job.lease, completed_attempt(passed=True))
        assert transition.job.model_version is not None
        return transition.job.model_version
    finally:
        await db.close()


def _rows(n: int, version: int, rng: random.Random) -> tuple[list[NewPrediction], list[NewOutcome]]:
    now = datetime.now(UTC)
    predictions, outcomes = [], []
    for _ in range(n):
        pid = str(uuid.uuid4())
        features = {f: round(rng.uniform(0, 5000), 2) for f in FEATURES}
        predictions.append(
            NewPrediction(
                event_id=pid,
                prediction_id=pid,
                model_type="goal",
                version=version,
                subject=f"user-{rng.randrange(5000)}",
                inputs=json.dumps({"user_id": "u", "goal_id": "g", "features": features}),
                inputs_digest=None,
                prediction=json.dumps({"probability": round(rng.random(), 6)}),
                occurred_at=now - timedelta(seconds=rng.uniform(0, 3000)),
            )
        )
        outcomes.append(
            NewOutcome(
                event_id=str(uuid.uuid4()),
                prediction_id=pid,
                model_type=None,
                outcome=json.dumps({"achieved": rng.random() < 0.3}),
                occurred_at=now,
            )
        )
    return predictions, outcomes


async def _timed(batches: list[list[Any]], write: Any) -> float:
    started = time.perf_counter()
    for batch in batches:
        await write(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


async def one_run(url: str, n: int, seed: int) -> dict[str, float]:
    version = await _version(url)
    predictions, outcomes = _rows(n, version, random.Random(seed))
    db = Database(url, pool_size=2)
    conn = await asyncpg.connect(dsn(url))
    try:
        store = IngestStore(db)

        async def predict(batch: list[NewPrediction]) -> None:
            await store.predictions(batch, dead_letters=[], letter_for_refused=_no_letter)

        async def join(batch: list[NewOutcome]) -> None:
            result = await store.outcomes(batch, dead_letters=[], letter_for_refused=_no_letter)
            assert result.joined == len(batch), result

        figures = {"predictions": await _timed(_chunks(predictions), predict)}
        figures["outcomes"] = await _timed(_chunks(outcomes), join)

        # the same rows, bare: tables with the same columns and indexes, one INSERT per batch
        await conn.execute("CREATE TABLE bare_predictions (LIKE predictions INCLUDING ALL)")
        await conn.execute("CREATE TABLE bare_outcomes (LIKE waiting_outcomes INCLUDING ALL)")

        async def bare_predict(batch: list[NewPrediction]) -> None:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO bare_predictions (prediction_id, event_id, model_type, version, subject, inputs,
                                                     prediction, occurred_at)
                       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::jsonb[],
                                            $7::jsonb[], $8::timestamptz[])""",
                    [p.prediction_id for p in batch],
                    [p.event_id for p in batch],
                    [p.model_type for p in batch],
                    [p.version for p in batch],
                    [p.subject for p in batch],
                    [p.inputs for p in batch],
                    [p.prediction for p in batch],
                    [p.occurred_at for p in batch],
                )

        async def bare_outcome(batch: list[NewOutcome]) -> None:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO bare_outcomes (event_id, prediction_id, outcome, occurred_at)
                       SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[])""",
                    [o.event_id for o in batch],
                    [o.prediction_id for o in batch],
                    [o.outcome for o in batch],
                    [o.occurred_at for o in batch],
                )

        figures["bare_predictions"] = await _timed(_chunks(predictions), bare_predict)
        figures["bare_outcomes"] = await _timed(_chunks(outcomes), bare_outcome)
        worker = WorkerStore(db)
        started = time.perf_counter()
        saved = await live.evaluate(worker, every=0.001)
        figures["evaluation"] = time.perf_counter() - started
        assert saved == 2, saved
        return figures
    finally:
        await conn.close()
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = stack_settings()
    scratch = ScratchDatabases(settings)
    runs = []
    try:
        for run in range(args.runs):
            url = await scratch.create("fcl_bench_live")
            await asyncio.to_thread(upgrade, url)
            runs.append(await one_run(url, args.predictions, seed=run))
    finally:
        await scratch.drop_all()

    def col(name: str) -> list[float]:
        return [r[name] for r in runs]

    print(
        f"live join on {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})"
    )
    print(
        f"  {args.predictions} goal predictions, then one outcome each; batches of {BATCH}; median (min-max) of {args.runs} runs"
    )
    print(f"  predictions recorded                {spread(col('predictions'))} /s")
    print(f"  bare INSERT of the same rows        {spread(col('bare_predictions'))} rows/s")
    print(
        f"  ratio                               {spread([r['predictions'] / r['bare_predictions'] for r in runs], 2)}"
    )
    print(f"  outcomes joined                     {spread(col('outcomes'))} /s")
    print(f"  bare INSERT of the same rows        {spread(col('bare_outcomes'))} rows/s")
    print(f"  ratio                               {spread([r['outcomes'] / r['bare_outcomes'] for r in runs], 2)}")
    print(
        f"  live evaluation, one round (2 windows of {args.predictions} pairs, 20,000 read each): "
        f"{spread(col('evaluation'), 2)} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
