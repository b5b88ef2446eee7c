"""Pure parts of the HTTP API and `fcl watch`: cursors, the OpenAPI document built from the route
table, job timelines, and the watcher's board of running jobs."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fcl.contract.enums import JobStatus, TrainingEventStatus
from fcl.storage.entities import Job, TrainingEvent
from fcl.watch import JobBoard, describe
from fcl.web import schemas as s
from fcl.web.api import openapi
from fcl.web.routes import ENDPOINTS

T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def _event(**kw: Any) -> TrainingEvent:
    base: dict[str, Any] = dict(
        id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        attempt=1,
        dataset_id="d",
        model_type="goal",
        status=TrainingEventStatus.COMPLETED,
        worker="w1",
        started_at=T0,
        finished_at=T0,
        duration_seconds=1.0,
        fit_seconds=1.0,
        sample_count=10,
        dataset_watermark=10,
        metrics={},
        error_type=None,
        error_message=None,
        model_version=1,
        validation_passed=True,
        promoted=True,
    )
    return TrainingEvent(**{**base, **kw})


def _job(**kw: Any) -> Job:
    base: dict[str, Any] = dict(
        id=uuid.uuid4(),
        dataset_id="d",
        model_type="goal",
        status=JobStatus.COMPLETED,
        priority=5,
        attempts=2,
        max_attempts=3,
        rank_at=T0,
        run_after=T0,
        lease_owner=None,
        lease_token=None,
        lease_expires_at=None,
        cancel_requested=False,
        progress=1.0,
        error_type=None,
        error_message=None,
        model_version=3,
        created_at=T0,
        updated_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=3),
    )
    return Job(**{**base, **kw})


def test_cursor_round_trips_and_refuses_anything_else() -> None:
    event = _event(started_at=T0 + timedelta(microseconds=123))
    assert s.decode_cursor(s.encode_cursor(event.started_at, event.id)) == (event.started_at, event.id)
    for bad in ("", "zz", "bm90IGEgY3Vyc29y", s.encode_cursor(event.started_at, event.id)[:-4]):
        with pytest.raises(ValueError, match="not a cursor"):
            s.decode_cursor(bad)


def test_openapi_covers_the_route_table_and_every_ref_resolves() -> None:
    doc = openapi(ENDPOINTS, title="t", version="1", description="d")
    assert len([op for ops in doc["paths"].values() for op in ops]) == len(ENDPOINTS)
    text = json.dumps(doc)
    refs = {r.split("/")[-1] for r in re.findall(r'"#/components/schemas/([^"]+)"', text)}
    assert refs and refs <= set(doc["components"]["schemas"])
    trigger = doc["paths"]["/coaching/continuous-learning/trigger-training/{model_type}"]["post"]
    assert trigger["security"] == [{"bearer": []}]
    assert {"202", "400", "401", "403", "404", "409", "413", "422"} == set(trigger["responses"])
    body = doc["components"]["schemas"]["TriggerBody"]["properties"]["priority"]
    assert (body["minimum"], body["maximum"]) == (0, 9)
    history = {
        p["name"]: p for p in doc["paths"]["/coaching/continuous-learning/training-history"]["get"]["parameters"]
    }
    assert history["limit"]["schema"]["maximum"] == 100
    assert "null" not in json.dumps(history["model_type"]["schema"])  # a query parameter is absent, never null


def test_job_timeline_is_in_time_order_with_each_attempt() -> None:
    failed = _event(
        attempt=1,
        status=TrainingEventStatus.FAILED,
        started_at=T0 + timedelta(seconds=10),
        finished_at=T0 + timedelta(seconds=20),
        error_type="TrainerExited",
        error_message="killed",
        model_version=None,
        promoted=None,
    )
    done = _event(
        attempt=2, started_at=T0 + timedelta(seconds=60), finished_at=T0 + timedelta(seconds=90), model_version=3
    )
    detail = s.JobDetail.of_job(_job(), [failed, done])
    assert [(t.status, t.message) for t in detail.timeline] == [
        ("queued", "created with priority 5"),
        ("in_progress", "attempt 1 started on w1"),
        ("failed", "attempt 1 failed: TrainerExited: killed"),
        ("in_progress", "attempt 2 started on w1"),
        ("completed", "attempt 2 completed: version 3, promoted"),
        ("completed", "completed"),
    ]
    assert [e.attempt for e in detail.training_events] == [1, 2]


def test_watch_board_tracks_running_jobs_and_drops_repeats() -> None:
    board = JobBoard()
    running = {
        "event_id": "a",
        "job_id": "j1",
        "status": "in_progress",
        "progress": 0.25,
        "model_type": "goal",
        "dataset_id": "d",
        "occurred_at": "2026-11-26T09:30:00Z",
    }
    assert board.apply("training-status", running) is True
    assert board.apply("training-status", running) is False
    assert board.running["j1"]["progress"] == 0.25
    board.apply("training-status", {**running, "event_id": "b", "status": "completed", "model_version": 2})
    assert board.running == {}
    line = describe(
        "training-status",
        {**running, "status": "failed", "attempt": 3, "error": {"type": "TrainingTimeout", "message": "too slow"}},
    )
    assert line == "09:30:00 job j1 goal d: failed attempt 3 error TrainingTimeout: too slow"


class _Generations:
    """A change listener whose generations the test moves by hand (None: not healthy)."""

    def __init__(self) -> None:
        self.value: int | None = 0

    def generation(self, tables: Any) -> tuple[int, ...] | None:
        return None if self.value is None else (self.value,)


async def test_cache_misses_are_single_flight_and_a_write_starts_a_new_read() -> None:
    import asyncio

    from fcl.web.cache import ResponseCache

    listener = _Generations()
    cache = ResponseCache(listener)  # type: ignore[arg-type]
    reads: list[int] = []
    release = asyncio.Event()

    async def load() -> bytes:
        reads.append(1)
        await release.wait()
        return f"read {len(reads)}".encode()

    first = asyncio.create_task(cache.get_or_load("k", ("t",), load))
    others = [asyncio.create_task(cache.get_or_load("k", ("t",), load)) for _ in range(5)]
    await asyncio.sleep(0.01)
    first.cancel()  # the first client goes away: the read goes on for the others
    release.set()
    assert [await o for o in others] == [b"read 1"] * 5 and len(reads) == 1 and cache.joined == 5
    assert await cache.get_or_load("k", ("t",), load) == b"read 1"  # now cached
    listener.value = 1  # a write: the cached body is stale, and so would be a read in flight
    assert await cache.get_or_load("k", ("t",), load) == b"read 2" and len(reads) == 2
    listener.value = None  # no healthy listener: every request gets a read that began after it came
    assert await cache.get_or_load("k", ("t",), load) == b"read 3"
    assert await cache.get_or_load("k", ("t",), load) == b"read 4"


async def test_fresh_reads_answer_each_request_with_a_read_that_began_after_it_arrived() -> None:
    import asyncio

    from fcl.web.cache import FreshReads

    fresh = FreshReads()
    started: list[float] = []  # when each read began (the loop's clock)
    gates: list[asyncio.Event] = []

    async def load() -> tuple[int, float]:
        started.append(asyncio.get_running_loop().time())
        gate = asyncio.Event()
        gates.append(gate)
        await gate.wait()
        return len(started), started[-1]

    loop = asyncio.get_running_loop()
    first = asyncio.create_task(fresh.read("k", load))
    await asyncio.sleep(0.01)  # read 1 runs
    arrived = loop.time()
    later = [asyncio.create_task(fresh.read("k", load)) for _ in range(4)]
    await asyncio.sleep(0.01)
    later[0].cancel()  # a client that goes away cancels nothing for the others
    assert len(started) == 1  # the later requests do not start reads of their own...
    gates[0].set()
    assert (await first)[0] == 1
    while len(gates) < 2:
        await asyncio.sleep(0.001)
    gates[1].set()
    answers = [await t for t in later[1:]]
    # ...nor take read 1's answer, which began before they arrived: they share read 2
    assert [n for n, _ in answers] == [2, 2, 2] and all(began >= arrived for _, began in answers)
    assert fresh.reads == 2 and fresh.shared == 4
    other = asyncio.create_task(fresh.read("other", load))  # another key reads on its own
    while len(gates) < 3:
        await asyncio.sleep(0.001)
    gates[2].set()
    assert (await other)[0] == 3


async def test_a_fresh_read_that_fails_fails_the_requests_it_answers_and_the_next_one_reads_again() -> None:
    import asyncio

    from fcl.web.cache import FreshReads

    fresh = FreshReads()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls <= 2:
            raise RuntimeError(f"database down ({calls})")
        return "fine"

    results = await asyncio.gather(*(fresh.read("k", flaky) for _ in range(3)), return_exceptions=True)
    assert calls == 2  # the first request's read, then one read shared by the two that waited
    assert [str(r) for r in results] == ["database down (1)", "database down (2)", "database down (2)"]
    assert await fresh.read("k", flaky) == "fine" and calls == 3


async def test_a_failed_read_fails_every_request_that_joined_it_and_is_not_cached() -> None:
    import asyncio

    from fcl.web.cache import ResponseCache

    cache = ResponseCache(_Generations())  # type: ignore[arg-type]
    calls = 0

    async def boom() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("database down")

    results = await asyncio.gather(*(cache.get_or_load("k", ("t",), boom) for _ in range(3)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)

    async def ok() -> bytes:
        return b"fine"

    assert await cache.get_or_load("k", ("t",), ok) == b"fine"
