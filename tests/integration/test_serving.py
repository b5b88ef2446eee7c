"""`serving.ChampionWatcher` in a process of its own (`fcl serve goal`), against
real `model-versions` events: it serves each new champion (validated, manual promote, rollback)
after checking its sha256, and keeps serving the old one when the new one's artifact is bad."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fcl.storage.db import Database
from fcl.trainers.simulator import FinCoachSimulator
from tests.conftest import RunStack, store_from_env
from tests.integration.service_support import API, FCL, Service, make_champion, train, with_object_store
from tests.integration.streams_support import produce_raw, scalar


@pytest.fixture
def svc(stack: RunStack, tmp_path: Path) -> Iterator[Service]:
    with with_object_store(stack, tmp_path, "web", "trainer") as service:
        yield service


class Watcher:
    """`fcl serve goal`, its stdout lines collected by a thread."""

    def __init__(self, svc: Service) -> None:
        self.stderr = (svc.workdir / "watcher.log").open("wb")
        self.proc = subprocess.Popen(
            [FCL, "serve", "goal", "--api", svc.base_url],
            env=svc.env,
            cwd=svc.workdir,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float = 90) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the watcher printed nothing within {timeout}s:\n{self.log()}") from None

    def log(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(30)
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()
        return code


async def _api(svc: Service, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http,
        http.request(method, API + path, **kwargs) as r,
    ):
        return r.status, await r.json()


async def _train(svc: Service, db: Database, seed: int) -> int:
    return await train(svc, db, "goal-served", "goal", FinCoachSimulator(seed=seed, n_users=300).goal_samples())


async def test_the_watcher_serves_each_new_champion_and_only_checked_bytes(svc: Service) -> None:
    db = Database(svc.database_url, pool_size=2)
    watcher = await asyncio.to_thread(Watcher, svc)
    latencies: list[float] = []

    async def served(version: int) -> dict[str, Any]:
        line = await asyncio.to_thread(watcher.next)
        assert line["version"] == version, (line, watcher.log())
        status, body = await _api(svc, "GET", "/model-versions?model_type=goal")
        assert status == 200
        sha = next(v for v in body["versions"] if v["version"] == version)["artifact"]["sha256"]
        assert line["sha256"] == sha and line["model"] == "dict"  # the goal trainer's loaded pipeline
        assert line["event_id"] is not None  # it followed a model-versions event
        took = datetime.fromisoformat(line["loaded_at"]) - datetime.fromisoformat(line["event_occurred_at"])
        latencies.append(took.total_seconds())
        return line

    try:
        assert (await asyncio.to_thread(watcher.next))["watching"] == "goal"
        # Hostile records on the topic it follows: it skips what is not an event, asks the API
        # about what names its model type (no champion yet: nothing to swap), and keeps going.
        await produce_raw(
            svc.settings,
            svc.settings.topic("model-versions"),
            [
                (b"goal", b"\xff\xfe not utf-8"),
                (b"goal", None),  # a tombstone
                (b"goal", b"[1, 2, 3]"),
                (b"goal", b'{"model_type": "goal", "version": "x", "occurred_at": 7}'),
                (b"goal", b"x" * 900_000),
                (b"goal", b"[" * 100_000 + b"]" * 100_000),
            ],
        )
        v1 = await _train(svc, db, seed=50)
        await make_champion(svc, "goal", v1)
        await served(v1)

        v2 = await _train(svc, db, seed=51)
        await make_champion(svc, "goal", v2)
        await served(v2)

        status, body = await _api(svc, "POST", "/model-versions/goal/rollback")
        assert status == 200, body
        await served(v1)

        # `fcl predict`: records on stdin, one prediction a line from the champion; a refused
        # line is answered with its reason and the exit status says so.
        records = list(FinCoachSimulator(seed=52, n_users=20).goal_samples())[:5]
        lines = [json.dumps({k: v for k, v in r.items() if k != "achieved"}) for r in records]
        lines.insert(2, "not json")
        lines.append(json.dumps({"user_id": "u", "goal_id": "g", "features": {"nope": 1.0}}))
        done = await asyncio.to_thread(
            subprocess.run,
            [FCL, "predict", "goal", "--api", svc.base_url],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            env=svc.env,
            timeout=120,
        )
        answers = [json.loads(x) for x in done.stdout.splitlines()]
        assert done.returncode == 1, done.stderr
        assert [a["version"] for a in answers if "error" not in a] == [v1] * 5
        assert all(0 <= a["probability"] <= 1 for a in answers if "error" not in a)
        errors = {a["line"]: a["error"] for a in answers if "error" in a}
        assert errors[3] == "not JSON" and "records.0.features: the model was trained on" in errors[7], errors

        # v2's object in the store is replaced by other bytes: the API refuses to serve them (503),
        # the watcher keeps v1 and says why.
        location = await scalar(db, "SELECT artifact_path FROM model_versions WHERE version = :v", v=v2)
        store = store_from_env(svc.env)
        import obstore

        bucket_key = location.removeprefix("s3://").split("/", 1)[1]
        await asyncio.to_thread(obstore.put, store._bucket(store.bucket), bucket_key, b"not the model")
        status, body = await _api(svc, "POST", f"/model-versions/goal/{v2}/promote", json={"reason": "bad bytes"})
        assert status == 200, body
        deadline = time.monotonic() + 30
        while "not swapped" not in watcher.log() and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert "not swapped, v1 keeps serving" in watcher.log() and "artifact_unreadable" in watcher.log()
        assert watcher.lines.empty()
        print(f"model-versions event -> watcher serving: {[round(x, 3) for x in latencies]} s")
        assert watcher.proc.poll() is None  # alive after all of it
    finally:
        code = await asyncio.to_thread(watcher.stop)
        await db.close()
    assert code == 0  # SIGTERM stops it cleanly
