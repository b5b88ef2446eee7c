"""Artifacts leaving the machine: write and read time of the largest artifact fcl makes (a goal
Random Forest at its default hyperparameters on 3,000 simulated users), in a local folder and in
the local stack's SeaweedFS over S3; then the time from a `model-versions` event to a
`ChampionWatcher` serving the new champion (download from `fcl web` with the token, sha256 check,
safe load, swap), over alternating manual promotes.

Run with `make bench` or `.venv/bin/python bench/bench_artifacts.py` (the local stack must be up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import aiohttp
from _common import ROOT, ScratchDatabases, spread, stack_settings

from fcl.contract.settings import Settings
from fcl.messaging.admin import ensure_topics
from fcl.serving import ChampionWatcher, Served
from fcl.stack.common import free_port
from fcl.storage.artifacts import PART_BYTES, SINGLE_PUT_BYTES, ArtifactStore
from fcl.storage.db import Database
from fcl.storage.migrate import upgrade
from fcl.trainers.base import Artifact, TrainRequest
from fcl.trainers.registry import get_trainer
from fcl.trainers.simulator import FinCoachSimulator

sys.path.insert(0, str(ROOT))
from tests import factories  # the test suite's way of recording a version as a worker does

FCL = str(Path(sys.executable).with_name("fcl"))
API = "/coaching/continuous-learning"


def largest_artifact() -> Artifact:
    started = time.perf_counter()
    result = get_trainer("goal").train(TrainRequest(samples=FinCoachSimulator(seed=1, n_users=3000).goal_samples()))
    print(f"goal Random Forest (default hyperparameters, 3,000 users) trained in {time.perf_counter() - started:.1f} s")
    return result.artifact


def round_trips(store: ArtifactStore, artifact: Artifact, n: int) -> tuple[list[float], list[float], list[str]]:
    writes, reads, locations = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        stored = store.write(store.key_for_job("goal", uuid.uuid4(), 1, artifact.format), artifact)
        t1 = time.perf_counter()
        assert store.read(stored).data == artifact.data
        t2 = time.perf_counter()
        writes.append(t1 - t0)
        reads.append(t2 - t1)
        locations.append(stored.path)
    return writes, reads, locations


def report(label: str, size: int, writes: list[float], reads: list[float]) -> None:
    mib = size / 2**20
    for what, times in (("write", writes), ("read+verify", reads)):
        med = statistics.median(times)
        print(
            f"  {label:<22} {what:<12} median {1000 * med:7.1f} ms  min {1000 * min(times):7.1f}  "
            f"max {1000 * max(times):7.1f}  {mib / med:7.1f} MiB/s"
        )


async def watcher_latency(settings: Settings, artifact: Artifact, rounds: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env_store = {
        "FCL_ARTIFACT_URL": f"s3://{settings.artifact_location.removeprefix('s3://').split('/')[0]}/{prefix}",
        "FCL_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id or "",
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key or "",
        "AWS_REGION": settings.aws_region or "us-east-1",
    }
    scratch = ScratchDatabases(settings)
    url = await scratch.create("fcl_bench_serving")
    await asyncio.to_thread(upgrade, url)
    topic_prefix = f"fcl-bench-serving-{uuid.uuid4().hex[:6]}."
    bench = settings.model_copy(update={"database_url": url, "topic_prefix": topic_prefix})
    await ensure_topics(bench)
    store = ArtifactStore(env_store["FCL_ARTIFACT_URL"], ArtifactStore.from_settings(settings).s3)
    db = Database(url, pool_size=2)
    for _ in range(2):
        stored = store.write(store.key_for_job("goal", uuid.uuid4(), 1, artifact.format), artifact)
        await factories.record_version(db, "goal", artifact_path=stored.path, sha256=stored.sha256, size=stored.size)
    port = free_port()
    env = {
        **os.environ,
        **env_store,
        "FCL_DATABASE_URL": url,
        "FCL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FCL_TOPIC_PREFIX": topic_prefix,
        "FCL_HTTP_PORT": str(port),
        "FCL_API_TOKEN": "bench",
    }
    with tempfile.NamedTemporaryFile(prefix="fcl-bench-serving-", suffix=".log", delete=False) as log:
        web = subprocess.Popen([FCL, "web"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    swapped: asyncio.Queue[tuple[float, Served]] = asyncio.Queue()
    watcher = ChampionWatcher(
        "goal",
        api_url=base,
        token="bench",
        kafka_bootstrap=settings.kafka_bootstrap,
        topic_prefix=topic_prefix,
        on_swap=lambda served: swapped.put_nowait((time.perf_counter(), served)),
    )
    try:
        async with aiohttp.ClientSession(base, headers={"Authorization": "Bearer bench"}) as http:
            for _ in range(150):
                try:
                    async with http.get("/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            async with watcher:
                await swapped.get()  # the champion at start (v2)
                from_event, from_post = [], []
                for i in range(rounds):
                    target = 1 if i % 2 == 0 else 2
                    posted = time.perf_counter()
                    async with http.post(f"{API}/model-versions/goal/{target}/promote", json={"reason": "bench"}) as r:
                        assert r.status == 200, await r.text()
                    at, served = await asyncio.wait_for(swapped.get(), 60)
                    assert served.version == target and served.cause is not None
                    from_post.append(at - posted)
                    event_at = datetime.fromisoformat(served.cause["occurred_at"])
                    from_event.append((served.loaded_at - event_at).total_seconds())
        print(
            f"\nChampionWatcher: model-versions event -> new model serving ({rounds} manual promotes, "
            f"{len(artifact.data) / 2**20:.2f} MiB artifact from `fcl web`, SeaweedFS behind it):"
        )
        for label, values in (("event occurred_at -> swap", from_event), ("POST promote sent -> swap", from_post)):
            print(
                f"  {label:<28} median {1000 * statistics.median(values):7.1f} ms  "
                f"min {1000 * min(values):7.1f}  max {1000 * max(values):7.1f}"
            )
    finally:
        web.terminate()
        web.wait(timeout=30)
        await db.close()
        await scratch.drop_all()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--large-mib", type=float, nargs="*", default=[15.2, 96.0], help="sizes of the write-throughput figures"
    )
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    settings = stack_settings()
    if not (settings.s3_endpoint_url and settings.artifact_location.startswith("s3://")):
        raise SystemExit("the local stack has no object store: run `fcl stack up`")
    artifact = largest_artifact()
    print(f"artifact: {len(artifact.data):,} bytes ({len(artifact.data) / 2**20:.2f} MiB, {artifact.format})")
    folder = Path(tempfile.mkdtemp(prefix="fcl-bench-artifacts-"))
    try:
        local = ArtifactStore(folder)
        w, r, _ = round_trips(local, artifact, args.rounds)
        report("local folder (fsync)", len(artifact.data), w, r)
        remote = ArtifactStore(
            f"{settings.artifact_location.rstrip('/')}/bench-{uuid.uuid4().hex[:8]}",
            ArtifactStore.from_settings(settings).s3,
        )
        w, r, written = round_trips(remote, artifact, args.rounds)
        report("SeaweedFS over S3", len(artifact.data), w, r)
        for location in written:
            remote.delete(location)
        large_writes(remote, args.large_mib)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    await watcher_latency(settings, artifact, args.rounds)


def large_writes(store: ArtifactStore, sizes_mib: list[float], runs: int = 3, per_run: int = 5) -> None:
    """Write throughput to the object store for artifacts of the given sizes (random bytes: the
    store sees bytes, whatever the format): `runs` runs of `per_run` writes each, every run's
    median MiB/s, printed as the median of the runs with their minimum and maximum. An artifact up
    to storage.artifacts.SINGLE_PUT_BYTES is one PUT; a larger one a multipart upload."""
    import obstore

    bucket = store._bucket(store.bucket)
    for mib in sizes_mib:
        data = os.urandom(int(mib * 2**20))
        artifact = Artifact(data=data, format="skops")
        floor = []  # the store's own: a bare PUT of the same bytes, no checksum, no key checks
        for _ in range(runs):
            times = []
            for _ in range(per_run):
                key = f"{store.prefix}/floor-{uuid.uuid4().hex}".lstrip("/")
                t0 = time.perf_counter()
                obstore.put(bucket, key, data, use_multipart=len(data) > SINGLE_PUT_BYTES, chunk_size=PART_BYTES)
                times.append(time.perf_counter() - t0)
                obstore.delete(bucket, key)
            floor.append(mib / statistics.median(times))
        rates = []
        for _ in range(runs):
            writes, _, written = round_trips(store, artifact, per_run)
            rates.append(mib / statistics.median(writes))
            for location in written:
                store.delete(location)
        how = "one PUT" if len(data) <= SINGLE_PUT_BYTES else f"multipart, {PART_BYTES >> 20} MiB parts"
        target = "  aim >= 150 MiB/s" if len(data) <= SINGLE_PUT_BYTES else ""
        print(
            f"  SeaweedFS over S3      write {mib:6.1f} MiB ({how}): {spread(rates, 1)} MiB/s{target}; "
            f"the same bare PUT (floor): {spread(floor, 1)} MiB/s"
        )


if __name__ == "__main__":
    asyncio.run(main())
