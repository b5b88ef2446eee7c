"""How fast the streams worker turns events into committed rows, on the local stack.

Prints, for ONE `fcl streams` worker (a real subprocess, real broker, real PostgreSQL):
  1. produce-to-committed-job latency at 100 threshold events/s: from just before the producer's
     send to the COMMIT of the transaction that wrote the job, its trigger and its outbox row
     (pg_xact_commit_timestamp of the trigger row; the local stack runs PostgreSQL with
     track_commit_timestamp=on), p50/p90/p99/max; and send to the job's `queued` status event
     arriving at a consumer (through the outbox relay and the broker);
  2. the sustained maximum of threshold events/s: a backlog is produced while the worker is stopped,
     the worker is started, and the rate is measured from its first committed job to its last;
  3. the same for samples/s, in events of 100 samples;
and beside 2 and 3, in the same run, what PostgreSQL does with the same rows and nothing else:
  - a bare multi-row INSERT of the same jobs, triggers and outbox rows (unnest arrays, one
    statement per table per transaction, transactions of the worker's mean batch size);
  - a bare COPY of the same sample rows (transactions of the worker's mean batch size);
a bare aiokafka consumer's messages/s reading the same topic; and a bare Faust agent
(bench/_faust_floor.py) reading it with the worker's batching and acks and doing nothing else,
the floor Faust itself sets; the worker's time per event is split into that floor, the bare
statement's time and the rest (our code, and what does not overlap). 2 and 3 run --runs times (3):
each rate and ratio is printed as the median of the runs with their minimum and maximum.

Run with `make bench` or `.venv/bin/python bench/bench_streams.py [--events N] [--sample-events N]`.
Uses a database and a topic prefix of its own and removes both afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from _common import ScratchDatabases, delete_topics, dsn, pct, spread, stack_settings
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.storage.migrate import upgrade

FCL = str(Path(sys.executable).with_name("fcl"))


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a process started in a session of its own and its children, SIGKILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Worker:
    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "worker") -> None:
        self.env, self.log_dir, self.n, self.name = env, log_dir, 0, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_dir / f"{self.name}-{self.n}.log"
        self.n += 1
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [FCL, "streams"], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"streams worker exited:\n{log.read_text()[-3000:]}")
            said = log.read_text(errors="replace")
            if "Worker ready" in said and "outbox relay: ready" in said:
                return
            time.sleep(0.1)
        raise SystemExit(f"streams worker not ready in 90 s:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


class Workers:
    """N streams workers in one consumer group (the topics' partitions are shared among them)."""

    def __init__(self, env: dict[str, str], log_dir: Path, n: int) -> None:
        self.workers = [Worker(env, log_dir, f"worker{i}") for i in range(n)]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def floor_args(self) -> tuple[dict[str, str], Path]:
        """The environment and log folder the bare Faust agent runs with: the workers' own."""
        return self.workers[0].env, self.workers[0].log_dir

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def threshold_event(dataset_id: str) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "dataset_id": dataset_id,
        "model_type": "goal",
        "priority": 5,
        "occurred_at": "2026-11-26T10:00:00Z",
    }


def samples_event(dataset_id: str, start: int, n: int = 100) -> dict[str, object]:
    samples = [
        {"user_id": f"u{start + i}", "features": {"spend": float(i), "savings": float(i % 7), "income": 1000.0 + i}}
        for i in range(n)
    ]
    return {
        "event_id": str(uuid.uuid4()),
        "dataset_id": dataset_id,
        "model_type": "segmentation",
        "occurred_at": "2026-11-26T10:00:00Z",
        "samples": samples,
    }


async def produce_all(settings: Settings, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bare_consumer_rate(settings: Settings, topic: str, expected: int) -> float:
    """Messages/s of a plain aiokafka consumer reading `topic` from the start (values not decoded)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen, first = 0, time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=2000, max_records=10_000)
            if not batch:
                raise SystemExit(f"bare consumer saw only {seen} of {expected} messages")
            seen += sum(len(v) for v in batch.values())
        return seen / (time.perf_counter() - first)
    finally:
        await consumer.stop()


async def queued_rate(settings: Settings, conn: asyncpg.Connection, run: int, events: int, since: float) -> float:
    """Threshold events/s end to end, read from outside: from the first of the run's jobs committed
    to the last of their `queued` status events on the broker (the Kafka timestamp the relay's
    producer gave it), once the relay has published them all."""
    await wait_until(
        conn,
        "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL OR parked_at IS NOT NULL",
        await conn.fetchval("SELECT count(*) FROM outbox"),
    )
    first = await conn.fetchval(
        "SELECT extract(epoch FROM min(received_at)) FROM job_triggers WHERE received_at >= to_timestamp($1) "
        "AND source <> 'bare'",
        since,
    )
    consumer = AIOKafkaConsumer(
        Topic.TRAINING_STATUS.full_name(settings.topic_prefix),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    last, seen, mine = 0.0, 0, f"tp-{run}-"
    try:
        while seen < events:
            batch = await consumer.getmany(timeout_ms=5000, max_records=10_000)
            if not batch:
                raise SystemExit(f"only {seen} of {events} queued events reached the status topic")
            for record in (r for records in batch.values() for r in records):
                event = json.loads(record.value)
                if event.get("status") == "queued" and str(event.get("dataset_id", "")).startswith(mine):
                    seen += 1
                    last = max(last, record.timestamp / 1000)
    finally:
        await consumer.stop()
    return events / (last - float(first))


async def faust_floor_rate(env: dict[str, str], log_dir: Path, topic: str, expected: int) -> float:
    """Events/s of a bare Faust agent (bench/_faust_floor.py) reading `topic` from the start with the
    worker's batching and acks, doing nothing else: first to last batch, like the worker's figure."""
    out = log_dir / f"floor-{uuid.uuid4().hex[:8]}.json"
    floor_env = {**env, "FLOOR_TOPIC": topic, "FLOOR_EXPECT": str(expected), "FLOOR_OUT": str(out)}
    with (log_dir / "floor.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_faust_floor.py")), "worker", "-l", "warn", "--without-web"],
            env=floor_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the bare Faust agent ended or stalled: see {log_dir / 'floor.log'}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.1)  # the file is written whole before the agent goes on
        seen = json.loads(out.read_text())
        return float(seen["seen"] - 1) / (seen["last"] - seen["first"])
    finally:
        stop_group(proc)


async def wait_until(conn: asyncpg.Connection, sql: str, target: int, timeout: float = 600) -> None:
    """Polls `sql` (a count) twice a second until it reaches `target`. Rates are computed
    afterwards from the database's own timestamps, so polling adds no load while measuring."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = await conn.fetchval(sql)
        if count >= target:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"{sql}: not at {target} within {timeout}s (at {count})")


async def steady_rate(conn: asyncpg.Connection, table: str, amount: str, since: float) -> float:
    """Rows (or `amount` summed) per second between the first and the last transaction that wrote
    into `table` after `since`, from received_at (the transaction's start): the last transaction's
    own amount is left out, as its end is not recorded. Start-up before the first commit is not
    counted: this is the sustained rate with a backlog."""
    rows = await conn.fetch(
        f"""
        SELECT extract(epoch FROM received_at) AS at, sum({amount}) AS n FROM {table}
        WHERE received_at >= to_timestamp($1) GROUP BY received_at ORDER BY received_at""",
        since,
    )
    if len(rows) < 3:
        raise SystemExit(f"only {len(rows)} transactions wrote {table}: use a larger backlog to measure a rate")
    return float(sum(r["n"] for r in rows[:-1])) / float(rows[-1]["at"] - rows[0]["at"])


async def latency(settings: Settings, conn: asyncpg.Connection, n: int, rate: float) -> None:
    status_topic = Topic.TRAINING_STATUS.full_name(settings.topic_prefix)
    arrivals: dict[str, float] = {}
    consumer = AIOKafkaConsumer(
        status_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    await consumer.seek_to_end()

    async def follow() -> None:
        async for record in consumer:
            arrivals.setdefault(json.loads(record.value)["job_id"], time.time())

    follower = asyncio.create_task(follow())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    topic = Topic.DATASET_THRESHOLD.full_name(settings.topic_prefix)
    try:
        start = time.monotonic()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            event = threshold_event(f"lat-{i}")
            sent[event["event_id"]] = time.time()  # type: ignore[index]
            await producer.send(topic, json.dumps(event).encode(), key=f"lat-{i}".encode())
        await producer.flush()
        achieved = n / (time.monotonic() - start)
        deadline = time.monotonic() + 60
        while await conn.fetchval("SELECT count(*) FROM job_triggers WHERE event_id = ANY($1::text[])", list(sent)) < n:
            if time.monotonic() > deadline:
                raise SystemExit("latency: not every event became a job within 60 s")
            await asyncio.sleep(0.05)
        rows = await conn.fetch(
            "SELECT event_id, job_id::text, extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS at "
            "FROM job_triggers WHERE event_id = ANY($1::text[])",
            list(sent),
        )
        deadline = time.monotonic() + 30
        while len([r for r in rows if r["job_id"] in arrivals]) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        follower.cancel()
        await producer.stop()
        await consumer.stop()
    to_commit = [(float(r["at"]) - sent[r["event_id"]]) * 1000 for r in rows]
    to_status = [(arrivals[r["job_id"]] - sent[r["event_id"]]) * 1000 for r in rows if r["job_id"] in arrivals]
    print(f"latency at {achieved:.0f} threshold events/s, {n} events (ms):")
    for label, values in (
        ("send -> job committed (COMMIT included)", to_commit),
        ("send -> `queued` status on the broker", to_status),
    ):
        print(
            f"  {label:<40} p50 {pct(values, 50):7.2f}  p90 {pct(values, 90):7.2f}  "
            f"p99 {pct(values, 99):7.2f}  max {max(values):7.2f}  mean {statistics.fmean(values):7.2f}  (n={len(values)})"
        )


KAFKA_TRIGGERS = "SELECT count(*) FROM job_triggers WHERE source <> 'bare'"  # not those of the bare INSERTs


@dataclass
class Figures:
    admissions: float  # threshold events/s, worker
    admission_txns: int
    bare_insert: float  # the same rows/s, bare multi-row INSERT
    threshold_consumer: float  # messages/s, bare aiokafka consumer
    samples: float  # samples/s, worker
    sample_txns: int
    bare_copy: float  # the same samples/s, bare COPY
    samples_consumer: float  # samples/s, bare aiokafka consumer
    threshold_floor: float  # events/s, a bare Faust agent with the worker's batching
    end_to_end: float  # threshold events/s, first job committed to the last `queued` event on the broker
    samples_floor: float  # samples/s, the same


async def bare_insert_rate(conn: asyncpg.Connection, events: int, per_txn: int) -> float:
    """Events/s PostgreSQL takes when each is just its rows (a job, its trigger, its outbox row),
    written by multi-row INSERTs of `per_txn` events per transaction: the floor under admission."""
    start = time.perf_counter()
    for first in range(0, events, per_txn):
        n = min(per_txn, events - first)
        ids = [uuid.uuid4() for _ in range(n)]
        datasets = [f"bare-{uuid.uuid4().hex}" for _ in range(n)]
        payloads = [json.dumps(threshold_event(d)) for d in datasets]
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO training_jobs (id, dataset_id, model_type, priority, max_attempts, rank_at, dedupe_key)
                   SELECT id, d, 'goal', 5, 3, now(), d || '/goal' FROM unnest($1::uuid[], $2::text[]) AS r(id, d)""",
                ids,
                datasets,
            )
            await conn.execute(
                """INSERT INTO job_triggers (scope, event_id, job_id, priority, source)
                   SELECT d || '/goal', 'bare-' || id, id, 5, 'bare' FROM unnest($1::uuid[], $2::text[]) AS r(id, d)""",
                ids,
                datasets,
            )
            await conn.execute(
                """INSERT INTO outbox (event_id, topic, key, payload)
                   SELECT gen_random_uuid(), 'bare', id::text, p::jsonb FROM unnest($1::uuid[], $2::text[]) AS r(id, p)""",
                ids,
                payloads,
            )
    return events / (time.perf_counter() - start)


async def bare_copy_rate(conn: asyncpg.Connection, sample_events: int, per_txn: int) -> float:
    """Samples/s of a bare COPY of the same sample rows, `per_txn` events of 100 per transaction."""
    await conn.execute(
        "INSERT INTO datasets (dataset_id, model_type, threshold) VALUES ('bare-copy', 'segmentation', 1000000000) "
        "ON CONFLICT DO NOTHING"
    )
    events = [samples_event("bare-copy", i * 100) for i in range(sample_events)]
    start = time.perf_counter()
    for first in range(0, sample_events, per_txn):
        records = [
            ("bare-copy", e["event_id"], json.dumps(sample))
            for e in events[first : first + per_txn]
            for sample in e["samples"]  # type: ignore[attr-defined]
        ]
        async with conn.transaction():
            await conn.copy_records_to_table(
                "training_samples", records=records, columns=["dataset_id", "batch_event_id", "payload"]
            )
    return sample_events * 100 / (time.perf_counter() - start)


async def throughput(
    settings: Settings, conn: asyncpg.Connection, worker: Workers, *, run: int, events: int, sample_events: int
) -> Figures:
    worker.stop()
    # Threshold events: a backlog of distinct datasets, consumed by a freshly started worker.
    topic = Topic.DATASET_THRESHOLD.full_name(settings.topic_prefix)
    before = await conn.fetchval(KAFKA_TRIGGERS)
    items = [(f"tp-{run}-{i}".encode(), json.dumps(threshold_event(f"tp-{run}-{i}")).encode()) for i in range(events)]
    await produce_all(settings, topic, items)
    since = time.time()
    worker.start()
    await wait_until(conn, KAFKA_TRIGGERS, before + events)
    # job_triggers.received_at is clock_timestamp() per trigger, so first to last trigger is exact.
    span = await conn.fetchval(
        "SELECT extract(epoch FROM max(received_at) - min(received_at)) FROM job_triggers "
        "WHERE received_at >= to_timestamp($1) AND source <> 'bare'",
        since,
    )
    admissions = (events - 1) / float(span)
    end_to_end = await queued_rate(settings, conn, run, events, since)
    admission_txns = await conn.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM job_triggers WHERE received_at >= to_timestamp($1) AND source <> 'bare'",
        since,
    )
    worker.stop()  # the bare figures get the machine to themselves, as the worker had it
    bare_insert = await bare_insert_rate(conn, events, max(1, events // admission_txns))
    threshold_consumer = await bare_consumer_rate(settings, topic, before + events)
    threshold_floor = await faust_floor_rate(*worker.floor_args(), topic, before + events)

    topic = Topic.TRAINING_SAMPLES.full_name(settings.topic_prefix)
    before = await conn.fetchval("SELECT coalesce(sum(total_samples), 0)::bigint FROM datasets")
    datasets = 40
    items = []
    for i in range(sample_events):
        ds = f"samples-{i % datasets}"
        items.append((ds.encode(), json.dumps(samples_event(ds, i * 100)).encode()))
    await produce_all(settings, topic, items)
    since = time.time()
    worker.start()
    await wait_until(conn, "SELECT coalesce(sum(total_samples), 0)::bigint FROM datasets", before + sample_events * 100)
    samples = await steady_rate(conn, "sample_batches", "sample_count", since)
    sample_txns = await conn.fetchval(
        "SELECT count(DISTINCT received_at) FROM sample_batches WHERE received_at >= to_timestamp($1)", since
    )
    worker.stop()
    bare_copy = await bare_copy_rate(conn, sample_events, max(1, sample_events // sample_txns))
    samples_consumer = 100 * await bare_consumer_rate(settings, topic, (run + 1) * sample_events)
    samples_floor = 100 * await faust_floor_rate(*worker.floor_args(), topic, (run + 1) * sample_events)
    await conn.execute("VACUUM ANALYZE")
    return Figures(
        admissions=admissions,
        admission_txns=admission_txns,
        bare_insert=bare_insert,
        threshold_consumer=threshold_consumer,
        samples=samples,
        sample_txns=sample_txns,
        bare_copy=bare_copy,
        samples_consumer=samples_consumer,
        threshold_floor=threshold_floor,
        samples_floor=samples_floor,
        end_to_end=end_to_end,
    )


def report(runs: list[Figures], events: int, sample_events: int) -> None:
    def col(name: str) -> list[float]:
        return [float(getattr(r, name)) for r in runs]

    def ratio(a: str, b: str) -> list[float]:
        return [getattr(r, a) / getattr(r, b) for r in runs]

    def split(worker: str, floor: str, database: str, unit: str, what: str) -> None:
        """The worker's time per event split into the Faust floor, the database's own (the bare
        statement's) and the rest (our code, and what does not overlap), in microseconds."""
        per = [1e6 / getattr(r, worker) for r in runs]
        faust_ = [1e6 / getattr(r, floor) for r in runs]
        db = [1e6 / getattr(r, database) for r in runs]
        rest = [p - f - d for p, f, d in zip(per, faust_, db, strict=True)]
        print(
            f"    per {unit}, microseconds: worker {spread(per, 1)} = Faust floor {spread(faust_, 1)} "
            f"+ {what} {spread(db, 1)} + the rest {spread(rest, 1)}"
        )

    n = len(runs)
    print(f"threshold events, backlog of {events} (one job each), median (min-max) of {n} runs:")
    print(f"  streams worker, first to last job committed   {spread(col('admissions'))} events/s")
    print(f"    transactions per run                        {spread(col('admission_txns'))}")
    print(f"  bare multi-row INSERT of the same rows        {spread(col('bare_insert'))} events/s")
    print(
        f"    worker / bare INSERT                        {spread(ratio('admissions', 'bare_insert'), 3)}  aim >= 0.5"
    )
    print(f"  bare aiokafka consumer, same topic            {spread(col('threshold_consumer'))} messages/s")
    print(f"    worker / bare consumer                      {spread(ratio('admissions', 'threshold_consumer'), 3)}")
    print(f"  bare Faust agent, the worker's batching       {spread(col('threshold_floor'))} events/s")
    print(f"    worker / bare Faust agent                   {spread(ratio('admissions', 'threshold_floor'), 3)}")
    split("admissions", "threshold_floor", "bare_insert", "event", "bare INSERT")
    print("  end to end, first job committed to the last `queued` event on the broker (read by a consumer)")
    print(f"                                                {spread(col('end_to_end'))} events/s  aim >= 5,000")
    print(f"samples, backlog of {sample_events} events x 100 samples, median (min-max) of {n} runs:")
    print(f"  streams worker, stored and counted            {spread(col('samples'))} samples/s")
    print(f"    transactions per run                        {spread(col('sample_txns'))}")
    print(f"  bare COPY of the same sample rows             {spread(col('bare_copy'))} samples/s")
    print(f"    worker / bare COPY                          {spread(ratio('samples', 'bare_copy'), 3)}  aim >= 0.8")
    print(f"  bare aiokafka consumer, same topic            {spread(col('samples_consumer'))} samples/s")
    print(f"    worker / bare consumer                      {spread(ratio('samples', 'samples_consumer'), 3)}")
    print(f"  bare Faust agent, the worker's batching       {spread(col('samples_floor'))} samples/s")
    print(f"    worker / bare Faust agent                   {spread(ratio('samples', 'samples_floor'), 3)}")
    split("samples", "samples_floor", "bare_copy", "sample", "bare COPY")


async def run(args: argparse.Namespace) -> None:
    stack = stack_settings()
    dbs = ScratchDatabases(stack)
    url = await dbs.create("fcl_bench")
    prefix = f"fcl-bench-{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, database_url=url, topic_prefix=prefix, _env_file=None)
    env = {
        **os.environ,
        "FCL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FCL_DATABASE_URL": url,
        "FCL_TOPIC_PREFIX": prefix,
        # at INFO Faust says "Worker ready" and the relay process "outbox relay: ready": what start() waits for
        "FCL_LOG_LEVEL": "INFO",
    }
    log_dir = Path(tempfile.mkdtemp(prefix="fcl-bench-streams-"))
    worker = Workers(env, log_dir, args.workers)
    conn = None
    try:
        await asyncio.to_thread(upgrade, url)
        await ensure_topics(settings)
        conn = await asyncpg.connect(dsn(url))
        worker.start()
        if not await conn.fetchval("SELECT current_setting('track_commit_timestamp') = 'on'"):
            raise SystemExit(
                "PostgreSQL runs without track_commit_timestamp: restart it with `fcl stack down; fcl stack up`"
            )
        await latency(settings, conn, args.latency_events, args.rate)
        runs = [
            await throughput(settings, conn, worker, run=r, events=args.events, sample_events=args.sample_events)
            for r in range(args.runs)
        ]
        report(runs, args.events, args.sample_events)
    finally:
        worker.stop()
        if conn is not None:
            await conn.close()
        await dbs.drop_all()
        await delete_topics(settings.kafka_bootstrap, prefix)
    print(f"worker logs: {log_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sample-events", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="streams workers in the group (docs/scaling.md: 2)")
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.workers} streams worker(s)"
    )
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
