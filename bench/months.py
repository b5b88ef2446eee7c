"""The months profile of the soak (`bench/soak.py --profile months`): 90 days of FinCoach traffic
in `--minutes` (125 by default), with the sample retention running throughout.

The clock is accelerated: one day lasts `minutes * 60 / 90` seconds. The samples' partitions are
that wide (FCL_SAMPLE_PARTITION_SECONDS), and the retention keeps 30 of those days
(FCL_SAMPLE_RETENTION_DAYS), as does the retention of model versions (FCL_RETENTION_KEEP_DAYS).
Every event carries its simulated time (`occurred_at`, and a spending record's `date`), spread
over the 90 days that end today.

Seven datasets of the four model types, on two `fcl streams`, two `fcl trainer` and one `fcl web`
process:
  - m-goal-a, m-goal-b: honest goal datasets (two of one type: neither may flip-flop the champion);
  - m-goal-x: a hostile goal dataset with every outcome inverted, from day 10 on (after the first
    goal champion): each of its candidates must be refused on the champion's reference set;
  - m-seg-a; m-seg-shape, whose records gain a feature on day 45 (a new shape version);
  - m-spend: 800 users' daily spending, one day of records per simulated day;
  - m-reco: recommendation transitions.
About `--hostile` of all values are poisons from tests/poison.py. The usual chaos runs twice: a
streams worker and a trainer worker (with its child) SIGKILLed and started again, every Kafka node
restarted, PostgreSQL restarted.

Every 3 simulated days it prints a row: the database's size and the samples' share of it (the
champions' copies of their reference sets apart too), the partitions, the artifact store's size,
each process's RSS, the largest training child seen since the last row, and `training-status`
latency (the least median of 3 rounds of 100 requests, and the p99 of all). At the end: the
invariants, and whether each figure stayed flat (within 10 %) once the retention window filled
(day 33): the first third of those rows against the last (`flatness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from _common import ROOT, ScratchDatabases, delete_topics, dsn, pct, stack_settings
from aiokafka import AIOKafkaProducer

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.stack import LocalStack
from fcl.storage.migrate import upgrade
from fcl.trainers.simulator import simulate

DAYS = 90
RETENTION_DAYS = 30
FULL_FROM_DAY = 33  # the retention window (30 days) is full, and the first partitions have gone
# Every window holds fewer than 30 days of its dataset (spending: 28.75 days of 800 users, and a
# spending training needs lookback + 14 + 2 * holdout = 27 days), so that the
# retention, not a window, bounds the samples: a partition is shared by every dataset, and one that
# any window still reads stays whole. A champion's reference set keeps no day: it is copied first.
ROW_EVERY_DAYS = 3
HOSTILE_FROM_DAY = 10
SHAPE_CHANGES_ON_DAY = 45
SPENDING_USERS = 800
WINDOWS = {"goal": 20_000, "segmentation": 20_000, "spending": 23_000, "recommendation": 15_000}
THRESHOLDS = {"goal": 25_000, "segmentation": 25_000, "spending": 24_000, "recommendation": 25_000}
HYPERPARAMETERS = {
    "goal": {"n_estimators": 50},
    "segmentation": {"k_max": 6},
    "spending": {"lookback": 7, "holdout_days": 3, "max_epochs": 10},
    "recommendation": {"steps": 2000, "fqe_steps": 1000},
}
DATASETS = {
    "m-goal-a": "goal",
    "m-goal-b": "goal",
    "m-goal-x": "goal",
    "m-seg-a": "segmentation",
    "m-seg-shape": "segmentation",
    "m-spend": "spending",
    "m-reco": "recommendation",
}
PROCESSES = ("streams-0", "streams-1", "trainer-0", "trainer-1", "web-0")
FLAT = 0.10


@dataclass
class Row:
    day: float
    elapsed: float
    db_mib: float
    samples_mib: float  # every partition of training_samples, and the champions' copies (reference_samples)
    reference_mib: float  # the champions' copies of their reference sets
    partitions: int
    sample_rows: int
    store_mib: float
    rss_mib: dict[str, float]
    child_peak_mib: float
    status_p50_ms: float
    status_p99_ms: float
    completed: int
    tables: dict[str, float] = field(default_factory=dict)  # the largest other relations, MiB


@dataclass
class Traffic:
    samples: dict[str, float] = field(default_factory=dict)  # event id -> when it was sent (epoch s)
    thresholds: set[tuple[str, str]] = field(default_factory=set)  # (dataset, event id)
    poisons: dict[tuple[str, int, int], str] = field(default_factory=dict)
    ambiguous_poisons: int = 0
    resends: int = 0
    valid_sends: int = 0
    by_dataset: Counter[str] = field(default_factory=Counter)


class Calendar:
    """The accelerated clock: day 0 began at `started`; each day lasts `day_seconds`."""

    def __init__(self, started: float, day_seconds: float) -> None:
        self.started, self.day_seconds = started, day_seconds
        self.first_date = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(
            days=DAYS
        )

    def day(self) -> float:
        return (time.monotonic() - self.started) / self.day_seconds

    def occurred_at(self) -> str:
        return (self.first_date + dt.timedelta(days=self.day())).isoformat().replace("+00:00", "Z")


def pools(seed: int) -> dict[str, list[dict[str, Any]]]:
    """Each dataset's records; the spending records are sorted by day (index = day * users)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for i, (dataset, model_type) in enumerate(DATASETS.items()):
        if model_type == "spending":
            records = list(simulate("spending", seed=seed + i, users=SPENDING_USERS, days=DAYS))
            out[dataset] = sorted(records, key=lambda r: (r["date"], r["user_id"]))
        elif model_type == "recommendation":
            out[dataset] = list(simulate(model_type, seed=seed + i, episodes=3000))
        else:
            out[dataset] = list(simulate(model_type, seed=seed + i, users=3000))
    for record in out["m-goal-x"]:
        record["achieved"] = not record["achieved"]  # the hostile dataset: every outcome inverted
    return out


async def produce(
    settings: Settings,
    cal: Calendar,
    records: dict[str, list[dict[str, Any]]],
    traffic: Traffic,
    until: float,
    rate: float,
    hostile: float,
    seed: int,
) -> None:
    from tests.poison import COMMON, SAMPLES, THRESHOLD

    rng = random.Random(seed)
    first_spending_date = dt.date.fromisoformat(records["m-spend"][0]["date"])
    cursor = dict.fromkeys(DATASETS, 0)
    poisons = [(Topic.DATASET_THRESHOLD, p) for p in [*COMMON, *THRESHOLD]]
    poisons += [(Topic.TRAINING_SAMPLES, p) for p in [*COMMON, *SAMPLES]]

    def new_producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=10_000,
        )

    producer = new_producer()
    await producer.start()

    async def send(topic: Topic, key: bytes | None, value: bytes | None) -> tuple[int, int] | None:
        nonlocal producer
        try:
            meta = await asyncio.wait_for(
                producer.send_and_wait(topic.full_name(settings.topic_prefix), value, key=key), 30
            )
        except Exception:  # noqa: BLE001 - the broker restarts during the soak
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
            producer = new_producer()
            with contextlib.suppress(Exception):
                await producer.start()
            return None
        return meta.partition, meta.offset

    async def send_valid(topic: Topic, dataset: str, event: dict[str, Any]) -> None:
        while await send(topic, dataset.encode(), json.dumps(event).encode()) is None:
            traffic.resends += 1  # the same event id again: it is stored or admitted once
            await asyncio.sleep(1)
        traffic.valid_sends += 1

    def chunk_of(dataset: str, day: float) -> list[dict[str, Any]] | None:
        pool, at = records[dataset], cursor[dataset]
        if DATASETS[dataset] == "spending":
            due = min(len(pool), int(day + 1) * SPENDING_USERS)  # the records up to today's
            if at >= due:
                return None
            chunk = [dict(r) for r in pool[at : min(at + 20, due)]]
            for r in chunk:  # the simulated calendar's date
                r["date"] = (
                    cal.first_date.date() + (dt.date.fromisoformat(r["date"]) - first_spending_date)
                ).isoformat()
            cursor[dataset] = at + len(chunk)
            return chunk
        chunk = [dict(pool[(at + i) % len(pool)]) for i in range(20)]
        cursor[dataset] = at + 20
        if dataset == "m-seg-shape" and day >= SHAPE_CHANGES_ON_DAY:
            for r in chunk:  # the producer adds a feature: a new shape version
                r["features"] = {**r["features"], "open_goals": float(len(r["user_id"]) % 4)}
        return chunk

    try:
        while time.monotonic() < until:
            started = time.monotonic()
            day = cal.day()
            active = [d for d in DATASETS if d != "m-goal-x" or day >= HOSTILE_FROM_DAY]
            if rng.random() < hostile:
                topic, poison = rng.choice(poisons)
                where = await send(topic, poison.key, poison.value)
                if where is None:
                    traffic.ambiguous_poisons += 1
                else:
                    traffic.poisons[(topic.full_name(settings.topic_prefix), *where)] = poison.name
            elif rng.random() < 0.005:  # an explicit trigger, now and then a repeat of an earlier id
                dataset = rng.choice(active)
                earlier = sorted(e for d, e in traffic.thresholds if d == dataset)
                event_id = rng.choice(earlier) if earlier and rng.random() < 0.3 else str(uuid.uuid4())
                event = {
                    "event_id": event_id,
                    "dataset_id": dataset,
                    "model_type": DATASETS[dataset],
                    "priority": 3,
                    "occurred_at": cal.occurred_at(),
                }
                await send_valid(Topic.DATASET_THRESHOLD, dataset, event)
                traffic.thresholds.add((dataset, event_id))
            else:
                for dataset in rng.sample(active, len(active)):
                    chunk = chunk_of(dataset, day)
                    if chunk is not None:
                        break
                else:
                    continue
                event = {
                    "event_id": str(uuid.uuid4()),
                    "dataset_id": dataset,
                    "model_type": DATASETS[dataset],
                    "samples": chunk,
                    "occurred_at": cal.occurred_at(),
                }
                await send_valid(Topic.TRAINING_SAMPLES, dataset, event)
                traffic.samples[str(event["event_id"])] = time.time()
                traffic.by_dataset[dataset] += len(chunk)
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    finally:
        await producer.stop()


def tree_mib(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total / 2**20


def metrics_url(log: Path) -> str | None:
    found = re.findall(r"/metrics, /livez, /readyz on (http://\S+)", log.read_text(errors="replace"))
    return found[-1] + "/metrics" if found else None


async def child_peak_mib(http: aiohttp.ClientSession, trainers: list[Any]) -> float:
    """The largest `fcl_training_child_peak_rss_bytes` the trainers report (the last job's child
    of each model type)."""
    peak = 0.0
    for proc in trainers:
        url = metrics_url(proc.log_dir / f"{proc.name}-{proc.n - 1}.log")
        if url is None:
            continue
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                for line in (await r.text()).splitlines():
                    if line.startswith("fcl_training_child_peak_rss_bytes{"):
                        peak = max(peak, float(line.rsplit(" ", 1)[1]) / 2**20)
    return peak


async def status_latency(
    http: aiohttp.ClientSession, base: str, n: int = 100, rounds: int = 3, pause: float = 2.0
) -> tuple[float, float]:
    """`training-status` latency: the least median of `rounds` rounds of `n` requests, `pause`
    seconds apart (what a request costs, less the training that happened to hold both CPUs during
    one round), and the 99th percentile of them all."""
    medians: list[float] = []
    every: list[float] = []
    for i in range(rounds):
        if i:
            await asyncio.sleep(pause)
        took: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{base}/training-status", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    if r.status == 200:
                        took.append((time.perf_counter() - t0) * 1000)
        if took:
            medians.append(statistics.median(took))
            every += took
    if not every:
        return float("nan"), float("nan")
    return min(medians), pct(every, 99)


async def measure(
    url: str, cal: Calendar, procs: dict[str, Any], http: aiohttp.ClientSession, api: str, store: Path
) -> Row:
    conn = await asyncpg.connect(dsn(url))
    try:
        figures = await conn.fetchrow("""
            SELECT pg_database_size(current_database()) AS db,
                   (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
                    WHERE i.inhparent = 'training_samples'::regclass) AS samples,
                   (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
                    WHERE i.inhparent = 'reference_samples'::regclass) AS reference,
                   (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'training_samples'::regclass) AS parts,
                   (SELECT count(*) FROM training_samples) AS sample_rows,
                   (SELECT count(*) FROM training_jobs WHERE status = 'completed') AS completed""")
        tables = {
            r["name"]: float(r["size"]) / 2**20
            for r in await conn.fetch("""
            SELECT c.relname AS name, pg_total_relation_size(c.oid) AS size FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname = 'public' AND NOT c.relispartition
            ORDER BY size DESC LIMIT 8""")
        }
    finally:
        await conn.close()
    trainers = [procs["trainer-0"], procs["trainer-1"]]
    p50, p99 = await status_latency(http, api)
    return Row(
        day=cal.day(),
        elapsed=time.monotonic() - cal.started,
        db_mib=float(figures["db"]) / 2**20,
        samples_mib=float(figures["samples"] + figures["reference"]) / 2**20,
        reference_mib=float(figures["reference"]) / 2**20,
        partitions=figures["parts"],
        sample_rows=figures["sample_rows"],
        store_mib=tree_mib(store),
        rss_mib={name: p.rss_kib() / 1024 if p.alive() else float("nan") for name, p in procs.items()},
        child_peak_mib=await child_peak_mib(http, trainers),
        status_p50_ms=p50,
        status_p99_ms=p99,
        completed=figures["completed"],
        tables=tables,
    )


def print_row(r: Row) -> None:
    rss = " ".join(f"{v:6.1f}" for v in r.rss_mib.values())
    print(
        f"  {r.day:5.1f} {r.elapsed:7.0f}s {r.db_mib:8.1f} {r.samples_mib:8.1f} {r.reference_mib:6.1f} {r.partitions:5d}"
        f" {r.sample_rows:9d}"
        f" {r.store_mib:7.1f}  {rss}  {r.child_peak_mib:6.1f}  {r.status_p50_ms:6.2f} {r.status_p99_ms:7.2f}"
        f" {r.completed:5d}",
        flush=True,
    )


def flatness(rows: list[Row]) -> tuple[bool, list[str]]:
    """Whether anything grows once the retention window is full: the rows from day 33 to the end of
    the traffic, in thirds; each figure's first third against its last. Disk and RSS compare their
    peaks, latency its median: a bounded figure that rises and falls (the database between two
    retention sweeps, the store by whole artifacts of 0.05 to 0.3 MiB) has the same peak in both
    thirds, a leak does not. The first and the last row are printed too."""
    full = [r for r in rows if FULL_FROM_DAY <= r.day <= DAYS]  # under traffic: not the row after it settled
    if len(full) < 6:
        return False, ["fewer than six rows after the retention window filled"]
    third = (full[-1].day - full[0].day) / 3
    start = [r for r in full if r.day <= full[0].day + third]
    end = [r for r in full if r.day >= full[-1].day - third]
    peak: list[tuple[str, Any]] = [
        ("database MiB", lambda r: r.db_mib),
        ("samples MiB (with the champions' copies)", lambda r: r.samples_mib),
        ("database less samples MiB", lambda r: r.db_mib - r.samples_mib),
        ("store MiB", lambda r: r.store_mib),
        *((f"{name} RSS MiB", lambda r, name=name: r.rss_mib[name]) for name in full[0].rss_mib),
    ]
    figures = [
        (name, max(f(r) for r in start), max(f(r) for r in end), f(full[0]), f(full[-1]), "peak") for name, f in peak
    ]
    figures.append(
        (
            "training-status p50 ms",
            statistics.median(r.status_p50_ms for r in start),
            statistics.median(r.status_p50_ms for r in end),
            full[0].status_p50_ms,
            full[-1].status_p50_ms,
            "median",
        )
    )
    lines, ok = [f"days {start[0].day:.0f}-{start[-1].day:.0f} against days {end[0].day:.0f}-{end[-1].day:.0f}"], True
    for name, a, b, first, last, how in figures:
        change = (b - a) / a if a else float("inf")
        flat = abs(change) <= FLAT or b <= a  # shrinking is not growth
        ok = ok and flat
        lines.append(
            f"{name}: {how} {a:.1f} then {b:.1f} ({change:+.1%}) {'flat' if flat else 'GREW'}"
            f"   [day {full[0].day:.0f}: {first:.1f}, day {full[-1].day:.0f}: {last:.1f}]"
        )
    return ok, lines


def largest_tables(rows: list[Row]) -> list[str]:
    """The largest relations other than the samples, on the first row after the window filled and
    on the last under traffic."""
    full = [r for r in rows if FULL_FROM_DAY <= r.day <= DAYS]
    if not full:
        return []
    return [
        f"day {r.day:.0f}: " + ", ".join(f"{name} {mib:.1f}" for name, mib in r.tables.items() if "samples" not in name)
        for r in (full[0], full[-1])
    ]


async def run(args: Any, proc_class: Any, restart_kafka: Any, restart_postgres: Any, settle: Any, letters: Any) -> int:
    minutes = args.minutes if args.minutes_given else 125.0
    day_seconds = minutes * 60 / DAYS
    base = stack_settings()
    stack = LocalStack(ROOT / ".fcl")
    scratch = ScratchDatabases(base)
    url = await scratch.create("fcl_months")
    await asyncio.to_thread(upgrade, url)
    conn = await asyncpg.connect(dsn(url))
    try:  # the daily partitions the migration made cover the accelerated days: they go (empty)
        for (name,) in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'training_samples'::regclass AND c.relname ~ '^training_samples_p[0-9]{8}$'"
        ):
            await conn.execute(f'DROP TABLE "{name}"')
        await conn.execute("SELECT fcl_ensure_sample_partitions_every(now(), $1, 12)", max(60, round(day_seconds)))
    finally:
        await conn.close()
    prefix = f"months-{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=base.kafka_bootstrap, database_url=url, topic_prefix=prefix, _env_file=None)
    await ensure_topics(settings)
    work = Path(tempfile.mkdtemp(prefix="fcl-months-"))
    store = work / "artifacts"
    port = 18000 + random.randrange(1000)
    keep_days = RETENTION_DAYS * day_seconds / 86400
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
    env |= {
        "FCL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FCL_DATABASE_URL": url,
        "FCL_TOPIC_PREFIX": prefix,
        "FCL_ARTIFACT_DIR": str(store),
        "FCL_HTTP_PORT": str(port),
        "FCL_METRICS_PORT": "0",
        "FCL_RETRAIN_SWEEP_SECONDS": "30",
        "FCL_HEARTBEAT_SECONDS": "2",
        "FCL_LEASE_SECONDS": "30",
        "FCL_TRAINER_DEVICE": "cpu",
        "FCL_TRAINER_HYPERPARAMETERS": json.dumps(HYPERPARAMETERS),
        "FCL_SAMPLE_PARTITION_SECONDS": str(max(60, round(day_seconds))),
        "FCL_SAMPLE_RETENTION_DAYS": f"{keep_days:.6f}",
        "FCL_RETENTION_KEEP_DAYS": f"{keep_days:.6f}",
        "FCL_RETENTION_KEEP_VERSIONS": "3",
        "FCL_DEAD_LETTER_RETENTION_DAYS": f"{keep_days:.6f}",
        "FCL_RETENTION_SWEEP_SECONDS": str(max(10, round(day_seconds / 3))),
        "FCL_HTTP_CACHE": "false",
    }
    for model_type, n in THRESHOLDS.items():
        env[f"FCL_THRESHOLD_{model_type.upper()}"] = str(n)
    for model_type, n in WINDOWS.items():
        env[f"FCL_TRAIN_WINDOW_{model_type.upper()}"] = str(n)
    procs = {name: proc_class(name, env, work) for name in PROCESSES}
    api = f"http://127.0.0.1:{port}/coaching/continuous-learning"
    rows: list[Row] = []
    records = await asyncio.to_thread(pools, args.seed)  # a minute or so: before the clock starts
    try:
        for p in procs.values():
            p.start()
        async with aiohttp.ClientSession() as http:
            for _ in range(120):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(1)
            started = time.monotonic()
            cal = Calendar(started, day_seconds)
            until = started + minutes * 60
            traffic = Traffic()
            chaos: list[str] = []
            print(
                f"months: {DAYS} days in {minutes:.0f} min (a day is {day_seconds:.1f} s); partitions "
                f"{env['FCL_SAMPLE_PARTITION_SECONDS']} s; retention {RETENTION_DAYS} days; logs in {work}",
                flush=True,
            )
            print(
                "    day  elapsed   db MiB  smp MiB ref MiB parts  smp rows  st MiB  "
                + " ".join(f"{n[:6]:>6}" for n in PROCESSES)
                + "  child   st p50  st p99  done",
                flush=True,
            )
            producing = asyncio.create_task(
                produce(settings, cal, records, traffic, until, args.rate, args.hostile, args.seed)
            )

            def kill_and_restart(name: str) -> Any:
                def act() -> None:
                    procs[name].kill()
                    procs[name].start()

                return act

            plan = [
                (0.15, "SIGKILL streams-0 and start it again", kill_and_restart("streams-0")),
                (0.25, "SIGKILL trainer-0 (and its training child) and start it again", kill_and_restart("trainer-0")),
                (0.32, "restart every Kafka node", lambda: restart_kafka(stack)),
                (0.42, "restart PostgreSQL", lambda: restart_postgres(stack)),
                (0.55, "SIGKILL streams-1 and start it again", kill_and_restart("streams-1")),
                (0.65, "SIGKILL trainer-1 (and its training child) and start it again", kill_and_restart("trainer-1")),
                (0.75, "restart every Kafka node", lambda: restart_kafka(stack)),
                (0.85, "restart PostgreSQL", lambda: restart_postgres(stack)),
            ]
            next_row = 0.0
            while not producing.done():
                now = time.monotonic()
                if plan and now >= started + plan[0][0] * minutes * 60:
                    _, what, action = plan.pop(0)
                    t0 = time.monotonic()
                    await asyncio.to_thread(action)
                    chaos.append(f"day {cal.day():5.1f}: {what} ({time.monotonic() - t0:.1f}s)")
                    print(f"  -- {chaos[-1]}", flush=True)
                elif cal.day() >= next_row:
                    with contextlib.suppress(OSError, asyncpg.PostgresError):
                        rows.append(await measure(url, cal, procs, http, api, store))
                        print_row(rows[-1])
                    next_row = (cal.day() // ROW_EVERY_DAYS + 1) * ROW_EVERY_DAYS
                await asyncio.sleep(0.5)
            await producing
            deaths = [name for name, p in procs.items() if not p.alive()]
            print(f"  traffic stopped on day {cal.day():.1f}; waiting for the service to settle", flush=True)
            await settle(url, timeout=900)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                rows.append(await measure(url, cal, procs, http, api, store))
                print_row(rows[-1])
        dead_letters = await letters(settings)
        return await report(args, minutes, url, traffic, dead_letters, rows, chaos, deaths, procs, work)
    finally:
        for p in procs.values():
            p.stop()
        await delete_topics(settings.kafka_bootstrap, prefix)
        await scratch.drop_all()


async def report(
    args: Any,
    minutes: float,
    url: str,
    traffic: Traffic,
    dead_letters: list[dict[str, Any]],
    rows: list[Row],
    chaos: list[str],
    deaths: list[str],
    procs: dict[str, Any],
    work: Path,
) -> int:
    conn = await asyncpg.connect(dsn(url))
    try:
        stored = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM sample_batches")}
        # the retention forgets the ids of events whose samples have all gone: every event sent
        # since the oldest partition left began must still be recorded
        kept_from = await conn.fetchval("""
            SELECT extract(epoch FROM min(CAST(substring(pg_get_expr(c.relpartbound, c.oid)
                                                         FROM $$FROM \\('([^']+)'\\)$$) AS timestamptz)))
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'training_samples'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'""")
        # a batch's rows share one created_at: they are all there, or their partition went whole
        torn = await conn.fetchval("""
            SELECT count(*) FROM (SELECT b.event_id, b.sample_count, count(s.id) AS n
                                  FROM sample_batches b JOIN training_samples s ON s.batch_event_id = b.event_id
                                  GROUP BY b.event_id, b.sample_count) x WHERE n <> sample_count""")
        counters = {
            r["dataset_id"]: r["total_samples"]
            for r in await conn.fetch("SELECT dataset_id, total_samples FROM datasets")
        }
        admitted = {
            (r["dataset_id"], r["event_id"])
            for r in await conn.fetch("""
            SELECT j.dataset_id, t.event_id FROM job_triggers t JOIN training_jobs j ON j.id = t.job_id""")
        }
        jobs = Counter(r["status"] for r in await conn.fetch("SELECT status FROM training_jobs"))
        moves = await conn.fetch("""
            SELECT l.model_type, l.version, v.dataset_id,
                   (SELECT bool_and(r.passed) FROM validation_results r
                    WHERE r.training_event_id = v.training_event_id) AS all_passed
            FROM champion_ledger l JOIN model_versions v USING (model_type, version)
            WHERE l.reason = 'validated' ORDER BY l.id""")
        hostile = await conn.fetch("""
            SELECT v.version, array_agg(r.metric ORDER BY r.position) FILTER (WHERE NOT r.passed) AS failed
            FROM model_versions v LEFT JOIN validation_results r ON r.training_event_id = v.training_event_id
            WHERE v.dataset_id = 'm-goal-x' GROUP BY v.version ORDER BY v.version""")
        shapes = await conn.fetchrow(
            "SELECT shape_version, shape_from_id FROM datasets WHERE dataset_id = 'm-seg-shape'"
        )
        newest_shape = await conn.fetchval("""
            SELECT v.info->>'shape_version' FROM model_versions v
            WHERE v.dataset_id = 'm-seg-shape' ORDER BY v.created_at DESC LIMIT 1""")
        versions = await conn.fetchrow(
            "SELECT count(*) AS all, count(*) FILTER (WHERE deleted_at IS NULL) AS kept FROM model_versions"
        )
        parked = await conn.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    recent = {e for e, at in traffic.samples.items() if kept_from is None or at > float(kept_from) + 5}
    lost, extra = recent - stored, stored - set(traffic.samples)
    forgotten = len(set(traffic.samples) - stored - recent)
    lost_triggers = traffic.thresholds - admitted
    by_place: dict[tuple[str, int, int], set[str]] = {}
    for letter in dead_letters:
        by_place.setdefault((letter["source_topic"], letter["partition"], letter["offset"]), set()).add(
            letter["event_id"]
        )
    not_lettered = [k for k in traffic.poisons if k not in by_place]
    lettered_twice = [k for k in traffic.poisons if len(by_place.get(k, ())) > 1]
    counters_ok = all(counters.get(d, 0) == n for d, n in traffic.by_dataset.items())
    bad_moves = [(m["model_type"], m["version"]) for m in moves if not m["all_passed"]]
    hostile_promoted = [m["version"] for m in moves if m["dataset_id"] == "m-goal-x"]
    hostile_refused_on_reference = [
        h["version"] for h in hostile if any(f.startswith("reference.") for f in h["failed"] or [])
    ]
    flat, flat_lines = flatness(rows)
    tables = largest_tables(rows)
    print()
    print(
        f"months soak on {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})"
    )
    print(f"  {DAYS} days in {minutes:.0f} min, {args.rate:.0f} events/s, hostile share {args.hostile:.0%}")
    print(
        f"  limits: a day is {minutes * 60 / DAYS:.1f} s, a partition {max(60, round(minutes * 60 / DAYS))} s; sample, "
        f"version and dead-letter retention {RETENTION_DAYS} days; versions kept 3 a type; windows {WINDOWS}; "
        f"thresholds {THRESHOLDS}; hyperparameters {HYPERPARAMETERS}"
    )
    for line in chaos:
        print(f"  {line}")
    print(
        f"  valid events sent: {traffic.valid_sends} ({len(traffic.samples)} samples events, "
        f"{sum(traffic.by_dataset.values())} samples; {len(traffic.thresholds)} threshold ids); resends {traffic.resends}"
    )
    print(
        f"  samples events: {len(stored)} recorded; of the {len(recent)} sent since the oldest partition kept, "
        f"lost {len(lost)}; recorded but not sent {len(extra)}; torn batches {torn}; ids forgotten with their "
        f"samples {forgotten}"
    )
    print(f"  counters equal to the samples sent, per dataset, after the retention: {counters_ok}")
    print(
        f"  threshold ids: {len(traffic.thresholds & admitted)} admitted of {len(traffic.thresholds)}; lost {len(lost_triggers)}"
    )
    print(
        f"  poisons: {len(traffic.poisons)} sent (+{traffic.ambiguous_poisons} failed sends); dead letters "
        f"{len(dead_letters)}; not dead-lettered {len(not_lettered)}, dead-lettered twice {len(lettered_twice)}"
    )
    print(f"  jobs: {dict(jobs)}; versions {versions['all']} ({versions['kept']} with their artifact)")
    print(f"  champion moves after validation: {len(moves)}; by a candidate that failed a check: {len(bad_moves)}")
    print(
        f"  hostile dataset m-goal-x: {len(hostile)} candidates, {len(hostile_refused_on_reference)} refused on the "
        f"champion's reference set, {len(hostile_promoted)} promoted"
    )
    print(
        f"  m-seg-shape: shape version {shapes['shape_version']} (from sample {shapes['shape_from_id']}); "
        f"its newest version trained on shape {newest_shape}"
    )
    print(
        f"  outbox: {unpublished} unpublished, {parked} parked; processes that died by themselves: {deaths or 'none'}"
    )
    print(f"  flat from day {FULL_FROM_DAY} (within {FLAT:.0%}):")
    for line in flat_lines:
        print(f"    {line}")
    print("  the largest other tables (MiB):")
    for line in tables:
        print(f"    {line}")
    codes = {name: p.stop() for name, p in procs.items()}
    print(f"  exit codes on SIGTERM: {codes}")
    ok = not (lost or extra or torn or lost_triggers or not_lettered or lettered_twice or bad_moves or deaths)
    ok = ok and counters_ok and not hostile_promoted and len(hostile_refused_on_reference) == len(hostile) > 0
    ok = ok and shapes["shape_version"] >= 2 and flat
    print(f"  invariants: {'all hold' if ok else 'VIOLATED'}   (logs in {work})")
    return 0 if ok else 1
