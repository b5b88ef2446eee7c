"""Soak: mixed traffic for a long time, with crashes and restarts, then the invariants by set.

On the local stack (`fcl stack up`), with a database and topic prefix of its own: two `fcl streams`
workers and two `fcl trainer` workers as real processes. For `--minutes` (30 by default) it sends
training samples for two datasets (goal, segmentation) and dataset-threshold events (some of them
repeats of an earlier event id), about `--hostile` (5 %) of all values taken from the poison corpus
(tests/poison.py). During the run it
  - SIGKILLs a streams worker (and starts a new one),
  - SIGKILLs a trainer worker and its training child (and starts a new one),
  - restarts the Kafka broker, and
  - restarts PostgreSQL,
each once. Then it waits for the service to settle and checks, by set comparison:
  - every valid samples event stored once, every valid threshold event id admitted once, and no
    sample row twice;
  - every poison dead-lettered exactly once (one dead-letter event id per poison's offset; repeats
    of the same event id, which the at-least-once relay may publish after a crash, are counted);
  - retraining continued (trainings completed in the last third of the run);
  - every champion move after validation came from a candidate whose checks all passed against
    the champion of the moment (the champion never moved to a worse model);
  - the first streams worker's RSS at its start and at the end.

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 20] [--hostile 0.05]

`--profile months` runs bench/months.py instead: 90 accelerated days with the sample retention
running throughout (two hours by default), and whether disk, memory and latency stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from _common import ROOT, ScratchDatabases, delete_topics, dsn, stack_settings
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.stack import LocalStack
from fcl.stack.common import terminate
from fcl.stack.manager import kafka_state
from fcl.stack.postgres import find_bindir
from fcl.storage.migrate import upgrade
from fcl.trainers.simulator import simulate

sys.path.insert(0, str(ROOT))
from tests.poison import COMMON, SAMPLES, THRESHOLD  # the corpus the tests use

FCL = str(Path(sys.executable).with_name("fcl"))
DATASETS = {"soak-goal": "goal", "soak-seg": "segmentation"}


class Proc:
    """One `fcl` service process, restartable, with its log."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.env, self.log_dir, self.n = name, env, log_dir, 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_dir / f"{self.name}-{self.n}.log"
        self.n += 1
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [FCL, self.name.split("-")[0]],
                env=self.env,
                cwd=self.log_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = {"streams": "Worker ready", "web": "fcl web:"}.get(self.name.split("-")[0], "ready")
        deadline = time.monotonic() + 120
        while ready not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


@dataclass
class Sent:
    samples: set[str] = field(default_factory=set)  # event ids of valid samples events
    thresholds: set[str] = field(default_factory=set)  # event ids of valid threshold events
    repeats: int = 0  # threshold events sent again with an earlier id
    poisons: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (topic, partition, offset) -> kind
    ambiguous_poisons: int = 0  # a send that failed: it may or may not have been written
    resends: int = 0
    valid_sends: int = 0


def restart_kafka(stack: LocalStack) -> None:
    """Every Kafka node of the stack (one, or a cluster's) stopped, then the stack up again."""
    for node in kafka_state(json.loads(stack.state_file.read_text()))["nodes"]:
        if node.get("pid"):
            terminate(node["pid"], node.get("start_ticks"), timeout=60)
    stack.up()


def restart_postgres(stack: LocalStack) -> None:
    stack.postgres.stop(find_bindir())
    stack.up()


async def produce(settings: Settings, sent: Sent, until: float, rate: float, hostile: float, seed: int) -> None:
    rng = random.Random(seed)
    pools = {ds: list(simulate(mt, seed=seed, users=4000)) for ds, mt in DATASETS.items()}
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
            # A new producer for the next try: after a broker restart one soak's aiokafka producer
            # kept a partition's batch stuck behind NotLeaderForPartition for good, while a new
            # producer wrote to the same partition at once.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
            producer = new_producer()
            with contextlib.suppress(Exception):
                await producer.start()
            return None
        return meta.partition, meta.offset

    try:
        while time.monotonic() < until:
            started = time.monotonic()
            if rng.random() < hostile:
                topic, poison = rng.choice(poisons)
                where = await send(topic, poison.key, poison.value)
                if where is None:
                    sent.ambiguous_poisons += 1
                else:
                    sent.poisons[(topic.full_name(settings.topic_prefix), *where)] = poison.name
            elif rng.random() < 0.1:
                dataset = rng.choice(list(DATASETS))
                repeat = bool(sent.thresholds) and rng.random() < 0.3
                event_id = rng.choice(sorted(sent.thresholds)) if repeat else str(uuid.uuid4())
                event = {"event_id": event_id, "dataset_id": dataset, "model_type": DATASETS[dataset], "priority": 3}
                while await send(Topic.DATASET_THRESHOLD, dataset.encode(), json.dumps(event).encode()) is None:
                    sent.resends += 1  # the same event id again: admission makes it one job
                    await asyncio.sleep(1)
                sent.thresholds.add(event_id)
                sent.repeats += repeat
                sent.valid_sends += 1
            else:
                dataset = rng.choice(list(DATASETS))
                pool, at = pools[dataset], cursor[dataset]
                chunk = [pool[(at + i) % len(pool)] for i in range(20)]
                cursor[dataset] = at + 20
                samples_id = str(uuid.uuid4())
                event = {
                    "event_id": samples_id,
                    "dataset_id": dataset,
                    "model_type": DATASETS[dataset],
                    "samples": chunk,
                }
                while await send(Topic.TRAINING_SAMPLES, dataset.encode(), json.dumps(event).encode()) is None:
                    sent.resends += 1
                    await asyncio.sleep(1)
                sent.samples.add(samples_id)
                sent.valid_sends += 1
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    finally:
        await producer.stop()


async def read_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        Topic.DEAD_LETTER.full_name(settings.topic_prefix),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letters: list[dict[str, Any]] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=5000)
            if not batch:
                return letters
            letters += [json.loads(r.value) for records in batch.values() for r in records]
    finally:
        await consumer.stop()


async def settle(url: str, timeout: float) -> None:
    """Until nothing waits to be published and no job waits or runs (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(dsn(url))
            try:
                busy = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL AND parked_at IS NULL)"
                    " + (SELECT count(*) FROM training_jobs WHERE status IN ('queued', 'in_progress'))"
                )
            finally:
                await conn.close()
            if busy == 0:
                return
        except (OSError, asyncpg.PostgresError):
            pass
        await asyncio.sleep(2)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("hours", "months"), default="hours", help="months: bench/months.py")
    parser.add_argument("--minutes", type=float, default=None, help="30 (hours) or 125 (months)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--hostile", type=float, default=0.05, help="share of poison values")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.minutes_given = args.minutes is not None
    if args.profile == "months":
        import months

        return await months.run(args, Proc, restart_kafka, restart_postgres, settle, read_dead_letters)
    args.minutes = args.minutes if args.minutes_given else 30.0

    base = stack_settings()
    stack = LocalStack(ROOT / ".fcl")
    scratch = ScratchDatabases(base)
    url = await scratch.create("fcl_soak")
    await asyncio.to_thread(upgrade, url)
    prefix = f"soak-{uuid.uuid4().hex[:8]}."
    settings = Settings(kafka_bootstrap=base.kafka_bootstrap, database_url=url, topic_prefix=prefix, _env_file=None)
    await ensure_topics(settings)
    work = Path(tempfile.mkdtemp(prefix="fcl-soak-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
    env |= {
        "FCL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FCL_DATABASE_URL": url,
        "FCL_TOPIC_PREFIX": prefix,
        "FCL_ARTIFACT_DIR": str(work / "artifacts"),
        "FCL_THRESHOLD_GOAL": "3000",
        "FCL_THRESHOLD_SEGMENTATION": "3000",
        "FCL_RETRAIN_SWEEP_SECONDS": "30",
        "FCL_HEARTBEAT_SECONDS": "2",
        "FCL_LEASE_SECONDS": "20",
        "FCL_TRAINER_DEVICE": "cpu",
        "FCL_TRAINER_HYPERPARAMETERS": json.dumps({"goal": {"n_estimators": 50}, "segmentation": {"k_max": 6}}),
    }
    streams = [Proc(f"streams-{i}", env, work) for i in range(2)]
    trainers = [Proc(f"trainer-{i}", env, work) for i in range(2)]
    try:
        for p in [*streams, *trainers]:
            p.start()
        rss_start = streams[1].rss_kib()
        started, started_wall = time.monotonic(), time.time()
        duration = args.minutes * 60
        until = started + duration
        sent = Sent()
        chaos: list[tuple[float, str]] = []
        producing = asyncio.create_task(produce(settings, sent, until, args.rate, args.hostile, args.seed))

        async def at(fraction: float, what: str, action: Any) -> None:
            await asyncio.sleep(max(0.0, started + fraction * duration - time.monotonic()))
            t0 = time.monotonic()
            await asyncio.to_thread(action)
            chaos.append((time.monotonic() - started, f"{what} ({time.monotonic() - t0:.1f}s)"))
            print(f"[{time.monotonic() - started:7.1f}s] {what}", flush=True)

        def kill_and_restart(proc: Proc) -> Any:
            def act() -> None:
                proc.kill()
                proc.start()

            return act

        await at(0.2, "SIGKILL streams-0 and start it again", kill_and_restart(streams[0]))
        await at(0.35, "SIGKILL trainer-0 (and its training child) and start it again", kill_and_restart(trainers[0]))
        await at(0.5, "restart the Kafka broker", lambda: restart_kafka(stack))
        await at(0.7, "restart PostgreSQL", lambda: restart_postgres(stack))
        await producing
        deaths = [p.name for p in [*streams, *trainers] if not p.alive()]
        print(f"[{time.monotonic() - started:7.1f}s] traffic stopped; waiting for the service to settle", flush=True)
        await settle(url, timeout=600)
        rss_end = streams[1].rss_kib()
        letters = await read_dead_letters(settings)

        conn = await asyncpg.connect(dsn(url))
        try:
            stored = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM sample_batches")}
            rows_ok = await conn.fetchval(
                "SELECT (SELECT coalesce(sum(sample_count), 0) FROM sample_batches) = (SELECT count(*) FROM training_samples)"
            )
            admitted = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM job_triggers")}
            jobs = await conn.fetch("SELECT status, extract(epoch FROM finished_at)::float8 AS t FROM training_jobs")
            moves = await conn.fetch("""
                SELECT l.model_type, l.version,
                       (SELECT bool_and(r.passed) FROM validation_results r
                        WHERE r.training_event_id = v.training_event_id) AS all_passed
                FROM champion_ledger l JOIN model_versions v USING (model_type, version)
                WHERE l.reason = 'validated' ORDER BY l.id""")
            parked = await conn.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL")
            unpublished = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        finally:
            await conn.close()

        lost_samples, extra_samples = sent.samples - stored, stored - sent.samples
        lost_triggers = sent.thresholds - admitted
        by_place: dict[tuple[str, int, int], set[str]] = {}
        copies = Counter(letter["event_id"] for letter in letters)
        for letter in letters:
            by_place.setdefault((letter["source_topic"], letter["partition"], letter["offset"]), set()).add(
                letter["event_id"]
            )
        poison_not_lettered = [k for k in sent.poisons if k not in by_place]
        poison_lettered_twice = [k for k in sent.poisons if len(by_place.get(k, ())) > 1]
        letters_not_poison = [k for k in by_place if k not in sent.poisons]
        statuses = Counter(r["status"] for r in jobs)
        last_third = sum(
            1 for r in jobs if r["status"] == "completed" and r["t"] and r["t"] > started_wall + duration * 2 / 3
        )
        bad_moves = [(m["model_type"], m["version"]) for m in moves if not m["all_passed"]]
        print()
        print(
            f"soak on {platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})"
        )
        print(f"  duration {args.minutes:.1f} min, {args.rate:.0f} events/s, hostile share {args.hostile:.0%}")
        for t, what in chaos:
            print(f"  at {t:7.1f}s: {what}")
        print(
            f"  valid events sent: {sent.valid_sends} ({len(sent.samples)} samples events, "
            f"{len(sent.thresholds)} threshold ids, {sent.repeats} repeats of an id); resends after a failed send: "
            f"{sent.resends}"
        )
        print(
            f"  samples events: {len(stored)} stored; lost {len(lost_samples)}, not sent {len(extra_samples)}; "
            f"sample rows once each: {rows_ok}"
        )
        print(
            f"  threshold ids: {len(sent.thresholds & admitted)} admitted of {len(sent.thresholds)}; "
            f"lost {len(lost_triggers)}"
        )
        print(
            f"  poisons: {len(sent.poisons)} sent (+{sent.ambiguous_poisons} sends that failed); dead letters "
            f"{len(letters)} ({len(copies)} distinct ids, {sum(c - 1 for c in copies.values())} repeated publications);"
            f" not dead-lettered {len(poison_not_lettered)}, dead-lettered twice {len(poison_lettered_twice)}, "
            f"letters for no known poison {len(letters_not_poison)}"
        )
        print(f"  jobs: {dict(statuses)}; completed in the last third of the run: {last_third}")
        print(f"  champion moves after validation: {len(moves)}; by a candidate that failed a check: {len(bad_moves)}")
        print(f"  outbox: {unpublished} unpublished, {parked} parked")
        print(f"  streams-1 RSS: {rss_start / 1024:.1f} MiB at start, {rss_end / 1024:.1f} MiB at the end")
        print(f"  processes that died by themselves: {deaths or 'none'}")
        codes = {p.name: p.stop() for p in [*streams, *trainers]}
        print(f"  exit codes on SIGTERM: {codes}")
        ok = not (lost_samples or extra_samples or lost_triggers or poison_not_lettered or poison_lettered_twice)
        ok = ok and rows_ok and last_third > 0 and not bad_moves and not deaths
        print(f"  invariants: {'all hold' if ok else 'VIOLATED'}   (logs in {work})")
        return 0 if ok else 1
    finally:  # whatever happened: no process, topic or database left behind
        for p in [*streams, *trainers]:
            p.stop()
        await delete_topics(settings.kafka_bootstrap, prefix)
        await scratch.drop_all()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
