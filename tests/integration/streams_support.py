"""Helpers for the streams tests: a database and topic prefix of the test's own, streams
workers as real subprocesses (`fcl streams`), and reading what reached the broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.storage.db import Database

FCL = str(Path(sys.executable).with_name("fcl"))


@dataclass
class StreamsEnv:
    settings: Settings
    env: dict[str, str]
    workdir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def topic(self, t: Topic) -> str:
        return t.full_name(self.settings.topic_prefix)

    def start_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        with (self.workdir / f"worker-{n}.log").open("ab") as log:
            proc = subprocess.Popen(
                [FCL, "streams"],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.workdir.glob("worker-*.log")))

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
        index = self.workers.index(proc)
        log = self.workdir / f"worker-{index}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"streams worker exited with {proc.returncode}:\n{self.logs()}")
            if log.exists() and "Worker ready" in log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"streams worker not ready within {timeout}s:\n{self.logs()}")

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


async def produce_raw(
    settings: Settings,
    topic: str,
    items: Sequence[tuple[bytes | None, bytes | None]],
    *,
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=partition) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def read_topic(
    settings: Settings, topic: str, *, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """Every JSON record on `topic` from the start, read until `until(records)` or timeout."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout

    async def fetch(timeout_ms: int) -> None:
        for recs in (await consumer.getmany(timeout_ms=timeout_ms)).values():
            for r in recs:
                value = json.loads(r.value)
                value["_key"] = r.key.decode() if r.key is not None else None
                value["_partition"] = r.partition
                records.append(value)

    try:
        while time.monotonic() < deadline and not until(records):
            await fetch(500)
        await fetch(1000)  # anything more (a repeat that should not be there) arrives now too
    finally:
        await consumer.stop()
    return records


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 60, what: str = "", logs: Callable[[], str] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached within {timeout}s: {what}\n{logs()}")


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.transaction() as s:
        return (await s.execute(text(sql), params)).scalar()


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.transaction() as s:
        return list((await s.execute(text(sql), params)).all())


def new_prefix() -> str:
    return f"fcl-st-{uuid.uuid4().hex[:8]}."


async def create_topics(settings: Settings) -> None:
    await ensure_topics(settings)
