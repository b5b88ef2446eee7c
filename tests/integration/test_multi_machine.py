"""Two trainer workers that share no filesystem: each runs in a working directory of its own and
their artifacts live only in the stack's S3-compatible object store (SeaweedFS). Successive
trainings of one model type alternate between them, and each candidate is compared with the
champion the other worker trained: read from the store, not from a disk the other one wrote."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from fcl.storage.db import Database
from fcl.trainers.simulator import FinCoachSimulator
from tests import factories
from tests.conftest import RunStack
from tests.integration.service_support import API, FCL, Service, with_object_store
from tests.integration.streams_support import eventually, rows, scalar


def start_trainer(svc: Service, machine: Path) -> subprocess.Popen[bytes]:
    machine.mkdir(exist_ok=True)
    log = machine / "trainer.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [FCL, "trainer"], env=svc.env, cwd=machine, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while "ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"trainer on {machine.name} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    return proc


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def svc(stack: RunStack, tmp_path: Path) -> Iterator[Service]:
    with with_object_store(stack, tmp_path, "web") as service:
        yield service


async def test_two_workers_without_a_shared_disk_judge_each_others_champions(svc: Service, tmp_path: Path) -> None:
    store_url = svc.env["FCL_ARTIFACT_URL"]
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    db = Database(svc.database_url, pool_size=2)
    try:
        jobs: list[uuid.UUID] = []
        for round_ in range(3):
            machine = machines[round_ % 2]
            sim = FinCoachSimulator(seed=40 + round_, n_users=300)
            await factories.store(db, "goal-shared", "goal", sim.goal_samples())
            jobs.append((await factories.admit(db, "goal-shared", "goal", 5)).job_id)
            proc = await asyncio.to_thread(start_trainer, svc, machine)
            try:
                await eventually(
                    lambda: scalar(db, "SELECT status = 'completed' FROM training_jobs WHERE id = :j", j=jobs[-1]),
                    timeout=180,
                    logs=partial(tail, machine / "trainer.log"),
                    what=f"round {round_} completed on {machine.name}",
                )
            finally:
                await asyncio.to_thread(stop, proc)
            version = await scalar(db, "SELECT model_version FROM training_jobs WHERE id = :j", j=jobs[-1])
            champion = await scalar(db, "SELECT version FROM champion_ledger ORDER BY seq DESC LIMIT 1")
            if champion != version:
                # Not promoted by its gate: the operator promotes it by hand (through the API), so
                # the next round is again judged against the other machine's model.
                async with (
                    aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http,
                    http.post(f"{API}/model-versions/goal/{version}/promote", json={"reason": "test"}) as r,
                ):
                    assert r.status == 200, await r.text()

        trained = await rows(
            db,
            "SELECT v.version, v.parent_version, v.artifact_path, e.worker, e.verdict, e.id AS event_id "
            "FROM model_versions v JOIN training_events e ON e.id = v.training_event_id ORDER BY v.version",
        )
        assert [v.version for v in trained] == [1, 2, 3]
        workers = [v.worker for v in trained]
        assert workers[0] != workers[1] and workers[1] != workers[2], workers  # they alternated
        for v in trained:
            assert v.artifact_path.startswith(f"{store_url}/goal/"), v.artifact_path
        by_version = {v.version: v for v in trained}
        for v in trained[1:]:
            # compared with the champion of its time, which the other machine trained ...
            assert v.parent_version == v.version - 1
            assert by_version[v.parent_version].worker != v.worker
            # ... really compared: change checks against its metrics, no unreadable champion
            assert v.verdict in ("passed", "failed"), v.verdict
            changes = await rows(
                db,
                "SELECT baseline FROM validation_results WHERE training_event_id = :e AND kind = 'change'",
                e=v.event_id,
            )
            assert changes and all(c.baseline is not None for c in changes)
        # Neither machine has an artifact on its disk; the web process serves them from the store.
        for machine in machines:
            assert [p for p in machine.rglob("*") if p.suffix in (".skops", ".safetensors")] == []
        async with (
            aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http,
            http.get(f"{API}/model-versions/goal/2/artifact") as r,
        ):
            assert r.status == 200 and len(await r.read()) > 0
    finally:
        await db.close()
