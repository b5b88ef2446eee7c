"""The HTTP API under load: one `fcl web` process on a database holding 10k finished jobs and their
training events (history rows; --events), --waiting queued jobs (0; the deep queue of the aims
below: --waiting 20000 --events 100000) and 10 model versions per model type; this process is the
load generator.

While it measures, a training completes every second (admitted, claimed and completed through the
queue, with its version and champion move), so the response cache is invalidated as it would be
in production. For each endpoint, with the cache on and off, two loads:
  closed loop: 16 clients on keep-alive connections, each sending its next request when the last
               answered: the most requests/s one server gives;
  open loop:   requests at a fixed arrival rate (--rate, default 1,500/s) over up to 16
               connections, the latency of EVERY request counted from the moment it was due
               (so a server that falls behind shows it, instead of slowing the load down).
  wrk:         when Debian's `wrk` is installed, the closed loop again from a C load generator
               (the client's own CPU and jitter out of the figure).
Latency is send to last byte, measured by the client. Each load runs --runs times (3): every
figure is the median of the runs with their minimum and maximum.

Aims: training-status uncached, 20k waiting and 100k finished: p50 <= 5 ms, p99 <= 20 ms at
>= 1,500 req/s (printed beside its lines);
history and versions with the cache off >= 2,000 req/s, p99 <= 20 ms.
Run with `make bench` or `.venv/bin/python bench/bench_api.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
from _common import ScratchDatabases, completed_attempt, pct, spread, stack_settings
from sqlalchemy import text

from fcl.contract.settings import Settings
from fcl.stack.common import free_port
from fcl.storage.datasets import SampleRepository
from fcl.storage.db import Database
from fcl.storage.entities import NewSampleBatch, TriggerRequest
from fcl.storage.migrate import upgrade
from fcl.storage.queue import JobQueue
from fcl.storage.registry import ChampionRepository

API = "/coaching/continuous-learning"
FCL = str(Path(sys.executable).with_name("fcl"))
TYPES = ("recommendation", "segmentation", "spending", "goal")


async def seed(url: str, events: int, versions_per_type: int, waiting: int = 0) -> None:
    db = Database(url, pool_size=1)
    try:
        async with db.transaction() as s:
            await s.execute(
                text("""
                INSERT INTO training_jobs (id, dataset_id, model_type, status, priority, attempts, rank_at, dedupe_key,
                                           created_at, started_at, finished_at, model_version)
                SELECT md5('job' || i)::uuid, 'ds-' || (i % 40), (ARRAY['recommendation','segmentation','spending','goal'])[1 + i % 4],
                       'completed', 5, 1, now() - make_interval(mins => :n - i), 'ds-' || (i % 40) || '/x',
                       now() - make_interval(mins => :n - i), now() - make_interval(mins => :n - i),
                       now() - make_interval(mins => :n - i) + interval '30 seconds', NULL
                FROM generate_series(1, :n) AS i"""),
                {"n": events},
            )
            await s.execute(
                text("""
                INSERT INTO training_events (id, job_id, attempt, dataset_id, model_type, status, worker, started_at,
                                             finished_at, duration_seconds, fit_seconds, sample_count, dataset_watermark,
                                             metrics, error_type, error_message, validation_passed, promoted)
                SELECT md5('event' || i)::uuid, md5('job' || i)::uuid, 1, 'ds-' || (i % 40),
                       (ARRAY['recommendation','segmentation','spending','goal'])[1 + i % 4],
                       CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END, 'bench:1',
                       now() - make_interval(mins => :n - i), now() - make_interval(mins => :n - i) + interval '30 seconds',
                       30.0, 25.0, 5000, i * 10,
                       jsonb_build_object('roc_auc', 0.9, 'brier', 0.1, 'accuracy', 0.85, 'pr_auc', 0.8),
                       CASE WHEN i % 10 = 0 THEN 'TrainingTimeout' END, CASE WHEN i % 10 = 0 THEN 'too slow' END,
                       i % 10 <> 0, i % 20 = 1
                FROM generate_series(1, :n) AS i"""),
                {"n": events},
            )
            # the waiting queue: `waiting` queued jobs over 400 datasets, priorities 0-9, ranked after
            # every job admitted during the run (so the trainings completed meanwhile claim their own)
            await s.execute(
                text("""
                INSERT INTO training_jobs (id, dataset_id, model_type, status, priority, attempts, rank_at, dedupe_key,
                                           created_at)
                SELECT md5('waiting' || i)::uuid, 'wait-' || (i % 400),
                       (ARRAY['recommendation','segmentation','spending','goal'])[1 + i % 4], 'queued', i % 10, 0,
                       now() + interval '1 day' + make_interval(secs => i), 'wait-' || i, now()
                FROM generate_series(1, :n) AS i"""),
                {"n": waiting},
            )
            for t in TYPES:
                await s.execute(
                    text("""
                    INSERT INTO model_versions (model_type, version, training_event_id, job_id, dataset_id, parent_version,
                                                artifact_path, artifact_sha256, artifact_size, artifact_format, metrics,
                                                hyperparameters, dataset_watermark, dataset_hash, seed, library_versions,
                                                code_version)
                    SELECT :t, v, e.id, e.job_id, e.dataset_id, NULLIF(v - 1, 0), '.fcl/artifacts/' || :t || '/v' || v,
                           md5(e.id::text) || md5(e.id::text), 123456, 'skops', e.metrics,
                           '{"n_estimators": 300, "max_depth": null}'::jsonb, e.dataset_watermark, md5(e.job_id::text),
                           42, '{"torch": "2.5", "scikit-learn": "1.6", "numpy": "2.1"}'::jsonb, 'abc123'
                    FROM generate_series(1, :k) AS v
                    JOIN LATERAL (SELECT * FROM training_events WHERE model_type = :t AND status = 'completed'
                                  ORDER BY started_at OFFSET v LIMIT 1) e ON true"""),
                    {"t": t, "k": versions_per_type},
                )
                await s.execute(
                    text("""
                    INSERT INTO champion_ledger (model_type, seq, version, previous_version, reason, event_id)
                    SELECT :t, v, v, NULLIF(v - 1, 0), 'validated', gen_random_uuid() FROM generate_series(1, :k) AS v"""),
                    {"t": t, "k": versions_per_type},
                )
            await s.execute(text("ANALYZE"))
    finally:
        await db.close()


async def cursor_deep_in_history(http: aiohttp.ClientSession, base: str, pages: int) -> str:
    before = None
    for _ in range(pages):
        async with http.get(
            f"{base}{API}/training-history", params={"limit": 100, **({"before": before} if before else {})}
        ) as r:
            before = (await r.json())["next_before"]
    assert before
    return str(before)


async def load(
    bases: list[str], path: str, *, clients: int, seconds: float, warmup: float
) -> tuple[list[float], int, float]:
    """Closed loop: `clients` clients, client i sending to server i mod len(bases)."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + seconds

        async def client(url: str) -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                async with http.get(url) as r:
                    await r.read()
                    ok = r.status == 200
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    errors += not ok

        await asyncio.gather(*(client(bases[i % len(bases)] + path) for i in range(clients)))
    return latencies, errors, seconds


async def open_loop(
    bases: list[str], path: str, *, rate: float, connections: int, seconds: float, warmup: float
) -> tuple[list[float], int, float]:
    """Requests due every 1/rate s whatever happened to the earlier ones; each one's latency is
    from when it was due to its last byte. Returns (latencies of those due after the warm-up,
    errors, the rate they were answered at)."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(url: str, due: float, counted: bool) -> None:
            nonlocal errors
            try:
                async with http.get(url) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if counted:
                latencies.append(time.perf_counter() - due)
                errors += not ok

        start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        i = 0
        while True:
            due = start + i / rate
            if due >= start + warmup + seconds:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bases[i % len(bases)] + path, due, due >= start + warmup)))
            i += 1
        await asyncio.gather(*tasks)
        answered_in = time.perf_counter() - (start + warmup)
    return latencies, errors, len(latencies) / answered_in


async def trainings_complete(url: str, stop: asyncio.Event, every: float = 1.0) -> int:
    """A training completes every `every` seconds, as a trainer worker records one: admitted,
    claimed, completed with its version and (it passes) a champion move. Returns how many."""
    db = Database(url, pool_size=2)
    done = 0
    try:
        async with db.transaction() as s:
            await SampleRepository(s).ingest(
                [
                    NewSampleBatch(
                        event_id=str(uuid.uuid4()),
                        dataset_id="bench-writes",
                        model_type="goal",
                        samples=[{"user_id": "u", "goal_id": "g", "features": {"x": 1.0}, "achieved": True}],
                    )
                ],
                thresholds={"goal": 10**9},
            )
        while not stop.is_set():
            async with db.transaction() as s:
                await JobQueue(s).admit(
                    [
                        TriggerRequest(
                            event_id=str(uuid.uuid4()), dataset_id="bench-writes", model_type="goal", priority=5
                        )
                    ]
                )
            async with db.transaction() as s:
                claimed = await JobQueue(s).claim(worker="bench-writer", lease=timedelta(minutes=5))
            assert claimed is not None
            async with db.transaction() as s:
                current = await ChampionRepository(s).current("goal")
                await JobQueue(s).complete(
                    claimed.job.lease, completed_attempt(passed=True, validated_against=current.seq if current else 0)
                )
            done += 1
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
    finally:
        await db.close()
    return done


# The aims, beside the lines they are about: (endpoint, load, cache on).
TARGETS = {
    ("training-status", "closed", False): "aim >= 1,500 req/s",
    ("training-status", "open", False): "aim p50 <= 5 ms, p99 <= 20 ms",
    ("training-status", "wrk", False): "aim p50 <= 5 ms, p99 <= 20 ms, >= 1,500 req/s",
}


async def wrk(url: str, *, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """The same closed loop from outside Python: wrk (a C load generator, Debian's package `wrk`)
    with `clients` connections on 2 threads. Requests/s, p50 and p99 in seconds, and non-2xx/errors."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds:.0f}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout

    def seconds_of(text_: str) -> float:
        for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
            if text_.endswith(unit):
                return float(text_[: -len(unit)]) * scale
        raise ValueError(text_)

    found = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip().startswith(("50%", "99%"))}
    rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    bad = sum(
        int(n)
        for line in out.splitlines()
        if line.strip().startswith(("Non-2xx", "Socket errors"))
        for n in line.replace(",", " ").split()
        if n.isdigit()
    )
    return rate, seconds_of(found["50%"]), seconds_of(found["99%"]), bad


async def served_requests(http: aiohttp.ClientSession, base: str) -> float:
    """The server's own count of answered requests (its /metrics), to check the client's count."""
    async with http.get(base + "/metrics") as r:
        text_ = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text_.splitlines()
        if line.startswith("fcl_http_request_duration_seconds_count")
    )


async def run(url: str, settings: Settings, *, cache: bool, args: argparse.Namespace) -> None:
    webs, bases = [], []
    for _ in range(args.servers):
        port = free_port()
        env = {
            **os.environ,
            "FCL_DATABASE_URL": url,
            "FCL_HTTP_PORT": str(port),
            "FCL_API_TOKEN": "bench",
            "FCL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FCL_TOPIC_PREFIX": "fcl-bench-api.",
            "FCL_HTTP_CACHE": "true" if cache else "false",
        }
        with tempfile.NamedTemporaryFile(prefix="fcl-bench-web-", suffix=".log", delete=False) as log:
            webs.append(
                subprocess.Popen([FCL, "web"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
        bases.append(f"http://127.0.0.1:{port}")
    base = bases[0]
    try:
        async with aiohttp.ClientSession() as http:
            for server in bases:
                for _ in range(150):
                    try:
                        async with http.get(server + "/healthz") as r:
                            if r.status in (200, 503):
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.2)
            deep = await cursor_deep_in_history(http, base, 50)
            print(
                f"\nresponse cache {'ON (the default: views kept until PostgreSQL reports a change)' if cache else 'OFF (every request reads PostgreSQL)'}"
            )
            print(
                f"{'endpoint':<52} {'load':<11} {'req/s':>20} {'p50 ms':>18} {'p99 ms':>18} {'errors':>6} "
                f"{'server saw':>10}  target"
            )
            stop = asyncio.Event()
            writer = asyncio.create_task(trainings_complete(url, stop))
            for name, path in (
                ("training-status", f"{API}/training-status"),
                ("training-history (newest 10)", f"{API}/training-history?limit=10"),
                (
                    "training-history (goal, failed, 10, 50 pages deep)",
                    f"{API}/training-history?limit=10&model_type=goal&status=failed&before={deep}",
                ),
                ("model-versions (all types)", f"{API}/model-versions"),
                ("model-versions (goal)", f"{API}/model-versions?model_type=goal"),
            ):
                if not name.startswith(args.only):
                    continue
                modes = ["closed", "open"] + (["wrk"] if shutil.which("wrk") else [])
                for mode in modes:
                    rates, p50s, p99s, errors, seen = [], [], [], 0, 0.0
                    for _ in range(args.runs):
                        before = sum([await served_requests(http, b) for b in bases])
                        if mode == "closed":
                            latencies, failed, seconds = await load(
                                bases, path, clients=args.clients, seconds=args.seconds, warmup=2.0
                            )
                            rate, label = len(latencies) / seconds, f"closed {args.clients}"
                            p50, p99 = pct(latencies, 50), pct(latencies, 99)
                        elif mode == "open":
                            latencies, failed, rate = await open_loop(
                                bases, path, rate=args.rate, connections=args.clients, seconds=args.seconds, warmup=2.0
                            )
                            label = f"open {args.rate:.0f}/s"
                            p50, p99 = pct(latencies, 50), pct(latencies, 99)
                        else:
                            rate, p50, p99, failed = await wrk(base + path, clients=args.clients, seconds=args.seconds)
                            label = f"wrk {args.clients}"
                        rates.append(rate)
                        p50s.append(1000 * p50)
                        p99s.append(1000 * p99)
                        errors += failed
                        # less the /metrics calls themselves
                        seen += sum([await served_requests(http, b) for b in bases]) - before - len(bases)
                    target = TARGETS.get((name, mode, cache), "")
                    print(
                        f"{name:<52} {label:<11} {spread(rates):>20} {spread(p50s, 2):>18} {spread(p99s, 2):>18} "
                        f"{errors:>6} {seen:>10.0f}  {target}"
                    )
            stop.set()
            print(f"trainings completed meanwhile (each a write that invalidates the cache): {await writer}")
    finally:
        for web in webs:
            web.terminate()
        for web in webs:
            web.wait(timeout=30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--versions-per-type", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1500.0, help="arrival rate of the open loop, requests/s")
    parser.add_argument("--servers", type=int, default=1, help="`fcl web` processes, load spread evenly")
    parser.add_argument("--waiting", type=int, default=0, help="queued jobs in the database (a deep queue: 20000)")
    parser.add_argument("--cache", choices=("both", "on", "off"), default="both", help="the response cache's settings")
    parser.add_argument("--only", default="", help="only the endpoints whose name starts with this")
    parser.add_argument("--runs", type=int, default=3, help="runs of each load: median (min-max) printed")
    args = parser.parse_args()
    settings = stack_settings()
    scratch = ScratchDatabases(settings)
    url = await scratch.create("fcl_bench_api")
    try:
        await asyncio.to_thread(upgrade, url)
        await seed(url, args.events, args.versions_per_type, args.waiting)
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"server: {args.servers} `fcl web` process(es); load: this process, {args.clients} concurrent clients, keep-alive; "
            f"{args.seconds:.0f} s per endpoint and load after 2 s of warm-up; a training completes every second"
        )
        print(
            f"data: {args.events} finished jobs and their training events (history rows), {args.waiting} waiting jobs, {args.versions_per_type} versions per model type"
        )
        print("'server saw': requests the server counted in its /metrics (includes the warm-up)")
        for cache in {"both": (True, False), "on": (True,), "off": (False,)}[args.cache]:
            await run(url, settings, cache=cache, args=args)
    finally:
        await scratch.drop_all()


if __name__ == "__main__":
    asyncio.run(main())
