"""The HTTP API in this process (aiohttp's test server) on a database of the test's own and the
real broker: auth, validation and error bodies, admission, cancel/retry, paging, versions,
rollback, validation results, health, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from fcl.contract.events import Drift, OutcomeShift
from fcl.contract.settings import Settings
from fcl.storage.db import Database
from fcl.storage.entities import EndedAttempt
from fcl.storage.jobs import WorkerRepository
from fcl.storage.queue import JobQueue
from fcl.storage.registry import RetentionRepository
from fcl.web.app import make_app
from tests import factories
from tests.conftest import RunStack
from tests.integration.streams_support import create_topics, new_prefix, read_topic

API = "/coaching/continuous-learning"
TOKEN = "test-token-" + uuid.uuid4().hex[:6]


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    settings: Settings
    db: Database

    async def call(self, method: str, path: str, *, token: str | None = TOKEN, status: int, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.client.request(method, path, headers=headers, **kwargs) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            assert r.status == status, (method, path, r.status, body)
            return body

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.db.transaction() as s:
            return (await s.execute(text(sql), params)).scalar()


def _settings(stack: RunStack, db: Database, **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=db.url,
        topic_prefix=new_prefix(),
        api_token=TOKEN,
        http_max_body_bytes=4096,
        _env_file=None,
        **extra,
    )


@pytest.fixture
async def api(stack: RunStack, own_db: Database) -> AsyncIterator[Api]:
    settings = _settings(stack, own_db)
    await create_topics(settings)
    async with TestClient(TestServer(make_app(settings))) as client:
        yield Api(client, settings, own_db)


async def _dataset(
    db: Database, dataset_id: str, model_type: str = "goal", samples: int = 1, threshold: int = 1000
) -> None:
    await factories.store(db, dataset_id, model_type, count=samples, threshold=threshold)


async def _version(
    db: Database, model_type: str, *, passed: bool, auc: float, drift: Drift | None = None
) -> tuple[int, uuid.UUID]:
    """A completed training with its version and checks, as a trainer worker records them."""
    done = await factories.record_version(db, model_type, passed=passed, auc=auc, drift=drift)
    assert done.model_version is not None and done.training_event_id is not None
    return done.model_version, done.training_event_id


async def test_every_post_needs_the_token_and_changes_nothing_without_it(api: Api) -> None:
    await _dataset(api.db, "ds-auth", threshold=1)
    await _version(api.db, "goal", passed=True, auc=0.8)
    await _version(api.db, "goal", passed=True, auc=0.9)
    job = uuid.uuid4()
    events_before = await api.scalar("SELECT count(*) FROM outbox")
    posts = [
        f"{API}/trigger-training/goal",
        f"{API}/training-job/{job}/cancel",
        f"{API}/training-job/{job}/retry",
        f"{API}/auto-trigger-ready",
        f"{API}/model-versions/goal/rollback",
        f"{API}/model-versions/goal/1/promote",
    ]
    for path in posts:
        for token in (None, "wrong", ""):
            body = await api.call("POST", path, token=token, status=401, json={"dataset_id": "ds-auth"})
            assert body["error"]["code"] == "unauthorized" and body["error"]["request_id"]
        body = await api.call("POST", path, token=None, status=401, headers={"Authorization": "Basic " + TOKEN})
        assert "Bearer" in body["error"]["message"]
    assert await api.scalar("SELECT count(*) FROM training_jobs WHERE dataset_id = 'ds-auth'") == 0
    assert await api.scalar("SELECT count(*) FROM champion_ledger") == 2
    assert await api.scalar("SELECT count(*) FROM outbox") == events_before


async def test_a_token_reaches_what_its_scope_allows_and_no_more(stack: RunStack, own_db: Database) -> None:
    """FCL_SERVE_TOKEN reads and downloads but never changes anything (403); FCL_READ_TOKEN, once
    set, closes every GET but the probes; the ledger names the admin token's holder first, then
    what the caller claims."""
    serve, read = f"serve-{uuid.uuid4().hex[:8]}", f"read-{uuid.uuid4().hex[:8]}"
    settings = _settings(stack, own_db, serve_token=serve, read_token=read, api_token_name="ops-team")
    await _dataset(own_db, "ds-scope", threshold=1000)
    v1, _ = await _version(own_db, "goal", passed=True, auc=0.8)
    v2, _ = await _version(own_db, "goal", passed=True, auc=0.9)
    async with TestClient(TestServer(make_app(settings, relay_events=False))) as client:
        api = Api(client, settings, own_db)
        status = f"{API}/training-status"
        for token in (None, "wrong"):
            body = await api.call("GET", status, token=token, status=401)
            assert body["error"]["code"] == "unauthorized"
        for token in (read, serve, TOKEN):
            await api.call("GET", status, token=token, status=200)
        for path in ("/metrics", "/openapi.json", "/healthz", f"{API}/model-versions"):
            await api.call("GET", path, token=None, status=401)
        await api.call("GET", "/livez", token=None, status=200)
        async with client.get("/readyz") as r:
            assert r.status in (200, 503)  # a probe: never asks for a token
        jobs_before = await api.scalar("SELECT count(*) FROM training_jobs")
        for token in (serve, read):
            body = await api.call(
                "POST", f"{API}/trigger-training/goal", token=token, status=403, json={"dataset_id": "ds-scope"}
            )
            assert body["error"]["code"] == "forbidden" and "admin token" in body["error"]["message"]
            await api.call("POST", f"{API}/model-versions/goal/rollback", token=token, status=403)
            await api.call("GET", f"{API}/dead-letters", token=token, status=403)  # producers' data
        assert await api.scalar("SELECT count(*) FROM training_jobs") == jobs_before
        predicted = {"event_id": "e1", "prediction_id": "p1", "model_type": "goal", "version": v1, "prediction": {}}
        await api.call("POST", f"{API}/predictions", token=read, status=403, json={"predictions": [predicted]})
        async with client.post(
            f"{API}/predictions", json={"predictions": [predicted]}, headers={"Authorization": f"Bearer {serve}"}
        ) as r:
            assert r.status == 503  # the serve token may post predictions (this app has no producer: 503)
        artifact = f"{API}/model-versions/goal/{v1}/artifact"
        await api.call("GET", artifact, token=read, status=403)
        async with client.get(artifact, headers={"Authorization": f"Bearer {serve}"}) as r:
            assert r.status not in (401, 403)  # let in (the factory's version has no file: 503)
        moved = await api.call(
            "POST",
            f"{API}/model-versions/goal/{v1}/promote",
            status=200,
            json={"reason": "scope test"},
            headers={"X-FCL-Actor": "mallory@laptop"},
        )
        assert moved["actor"] == "ops-team (claims mallory@laptop)" and moved["previous_version"] == v2


async def test_without_a_configured_token_every_post_is_refused(stack: RunStack, own_db: Database) -> None:
    settings = _settings(stack, own_db).model_copy(update={"api_token": None})
    await _dataset(own_db, "ds-open")
    async with TestClient(TestServer(make_app(settings, relay_events=False))) as client:
        for header in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            async with client.post(f"{API}/trigger-training/goal", json={"dataset_id": "ds-open"}, headers=header) as r:
                assert r.status == 401
                assert "FCL_API_TOKEN" in (await r.json())["error"]["message"] or header
        async with client.get(f"{API}/training-status") as r:
            assert r.status == 200  # reads stay open
    async with own_db.transaction() as s:
        assert (await s.execute(text("SELECT count(*) FROM training_jobs"))).scalar() == 0


async def test_trigger_follows_the_admission_rules_and_publishes_queued(api: Api) -> None:
    await _dataset(api.db, "ds-trigger")
    await _dataset(api.db, "ds-spend", model_type="spending")
    missing = await api.call("POST", f"{API}/trigger-training/goal", status=404, json={"dataset_id": "nope"})
    assert missing["error"]["code"] == "unknown_dataset"
    other = await api.call("POST", f"{API}/trigger-training/goal", status=409, json={"dataset_id": "ds-spend"})
    assert other["error"]["code"] == "model_type_mismatch"
    unknown = await api.call("POST", f"{API}/trigger-training/fraud", status=404, json={"dataset_id": "ds-trigger"})
    assert unknown["error"]["code"] == "unknown_model_type" and "goal" in unknown["error"]["message"]

    first = await api.call(
        "POST", f"{API}/trigger-training/goal", status=202, json={"dataset_id": "ds-trigger", "priority": 2}
    )
    assert first["outcome"] == "created" and first["job"]["status"] == "queued" and first["job"]["priority"] == 2
    joined = await api.call(
        "POST",
        f"{API}/trigger-training/goal",
        status=202,
        json={"dataset_id": "ds-trigger", "priority": 7, "unknown_field": "ignored"},
    )
    assert joined["outcome"] == "joined" and joined["job"]["job_id"] == first["job"]["job_id"]
    assert joined["job"]["priority"] == 7 and len(joined["job"]["trigger_event_ids"]) == 2
    again = await api.call(
        "POST",
        f"{API}/trigger-training/goal",
        status=202,
        json={"dataset_id": "ds-trigger"},
        headers={"Idempotency-Key": "k-1"},
    )
    repeat = await api.call(
        "POST",
        f"{API}/trigger-training/goal",
        status=202,
        json={"dataset_id": "ds-trigger"},
        headers={"Idempotency-Key": "k-1"},
    )
    assert (again["outcome"], repeat["outcome"]) == ("joined", "duplicate")
    assert repeat["trigger_event_id"] == again["trigger_event_id"]
    assert repeat["trigger_event_id"].startswith("http:k-1#") and repeat["job"]["job_id"] == first["job"]["job_id"]
    # The same key with another request is refused, not answered with the first one's job.
    other = await api.call(
        "POST",
        f"{API}/trigger-training/goal",
        status=422,
        json={"dataset_id": "ds-trigger", "priority": 9},
        headers={"Idempotency-Key": "k-1"},
    )
    assert other["error"]["code"] == "idempotency_key_reused"
    assert await api.scalar("SELECT count(*) FROM training_jobs") == 1

    # Every trigger of the job, paged in arrival order.
    job_path = f"{API}/training-job/{first['job']['job_id']}"
    assert (await api.call("GET", job_path, status=200))["trigger_count"] == 3
    page = await api.call("GET", f"{job_path}/triggers?limit=2", status=200)
    assert [t["event_id"] for t in page["items"]][1] == joined["trigger_event_id"]
    assert page["items"][0]["source"] == "http" and page["next_after"]
    rest = await api.call("GET", f"{job_path}/triggers?limit=2&after={page['next_after']}", status=200)
    assert [t["event_id"] for t in rest["items"]] == [again["trigger_event_id"]] and rest["next_after"] is None
    bad = await api.call("GET", f"{job_path}/triggers?after=bm90LWEtY3Vyc29y", status=422)
    assert bad["error"]["code"] == "invalid_cursor"
    await api.call("GET", f"{API}/training-job/{uuid.uuid4()}/triggers", status=404)

    topic = api.settings.topic("training-status")
    events = await read_topic(
        api.settings, topic, until=lambda r: any(e["job_id"] == first["job"]["job_id"] for e in r)
    )
    queued = [e for e in events if e["job_id"] == first["job"]["job_id"]]
    assert [e["status"] for e in queued] == ["queued"] and queued[0]["dataset_id"] == "ds-trigger"


async def test_kept_dead_letters_are_listed_shown_and_replayed_and_a_datasets_shape_reset(api: Api) -> None:
    from fcl.storage.deadletters import DeadLetterRepository
    from fcl.storage.entities import KeptInput

    topic = api.settings.topic("training-samples")
    replayable = json.dumps({"event_id": str(uuid.uuid4()), "replayed": True}).encode()
    binary = b"\xff\x00 not text"
    async with api.db.transaction() as s:
        await DeadLetterRepository(s).keep(
            [
                KeptInput(
                    letter_id=uuid.uuid4(),
                    source_topic=topic,
                    partition=0,
                    offset=offset,
                    key=b"ds-dl",
                    value=value,
                    value_bytes=len(value),
                    reason=reason,
                )
                for offset, value, reason in ((7, replayable, "shape differs"), (8, binary, "not valid JSON"))
            ]
        )
    await api.call("GET", f"{API}/dead-letters", token=None, status=401)  # their contents are the producers' data
    listed = await api.call("GET", f"{API}/dead-letters?limit=1", status=200)
    [first] = listed["items"]
    assert (first["offset"], first["key"], first["value_bytes"]) == (7, "ds-dl", len(replayable))
    assert listed["next_after"]
    rest = await api.call("GET", f"{API}/dead-letters?limit=1&after={listed['next_after']}", status=200)
    [second] = rest["items"]
    only = await api.call("GET", f"{API}/dead-letters?reason=JSON", status=200)
    assert [d["id"] for d in only["items"]] == [second["id"]]
    shown = await api.call("GET", f"{API}/dead-letters/{second['id']}", status=200)
    assert shown["value_encoding"] == "base64" and base64.b64decode(shown["value"]) == binary
    await api.call("GET", f"{API}/dead-letters/999999", status=404)
    await api.call("GET", f"{API}/dead-letters/x", status=422)

    assert (await api.call("POST", f"{API}/dead-letters/replay", status=422))["error"]["code"] == "invalid_body"
    done = await api.call("POST", f"{API}/dead-letters/replay", status=200, json={"ids": [first["id"]]})
    assert done == {"replayed": 1, "ids": [first["id"]]}
    records = await read_topic(api.settings, topic, until=lambda r: any(e.get("replayed") for e in r))
    assert [e["_key"] for e in records if e.get("replayed")] == ["ds-dl"]
    again = await api.call("GET", f"{API}/dead-letters/{first['id']}", status=200)
    assert again["replays"] == 1 and again["replayed_at"]

    await _dataset(api.db, "ds-shape")
    seen = await api.call("GET", f"{API}/datasets/ds-shape", status=200)
    assert seen["shape_version"] == 1 and seen["model_type"] == "goal"
    await api.call("POST", f"{API}/datasets/ds-shape/reset-shape", token=None, status=401)
    reset = await api.call("POST", f"{API}/datasets/ds-shape/reset-shape", status=200)
    assert reset["sample_shape"] is None
    await api.call("GET", f"{API}/datasets/no-such", status=404)


async def test_bad_requests_get_json_errors_with_request_ids(api: Api) -> None:
    await _dataset(api.db, "ds-bad")
    path = f"{API}/trigger-training/goal"
    for body, status, code in (
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_body"),
        (b'{"priority": 10}', 422, "invalid_body"),
        (b'{"priority": "high"}', 422, "invalid_body"),
        (b'{"priority": false}', 422, "invalid_body"),  # the fuzzer's find: lax mode read it as 0
        (b'{"priority": "5"}', 422, "invalid_body"),
        (b'{"dataset_id": ""}', 422, "invalid_body"),
    ):
        error = (
            await api.call(
                "POST",
                path,
                status=status,
                data=body,
                headers={"Content-Type": "application/json", "X-Request-Id": "req-42"},
            )
        )["error"]
        assert error["code"] == code and error["request_id"] == "req-42"
        assert "Traceback" not in error["message"]
    detail = (await api.call("POST", path, status=422, json={"priority": 10}))["error"]["details"]
    assert detail == [{"location": "body", "field": "priority", "message": "Input should be less than or equal to 9"}]
    too_big = await api.call("POST", path, status=413, data=b'{"dataset_id": "' + b"x" * 5000 + b'"}')
    assert too_big["error"]["code"] == "body_too_large" and "4096" in too_big["error"]["message"]
    assert (await api.call("GET", f"{API}/no-such-thing", status=404))["error"]["code"] == "not_found"
    async with api.client.delete(f"{API}/training-status") as r:
        assert (
            r.status == 405
            and "GET" in r.headers["Allow"]
            and (await r.json())["error"]["code"] == "method_not_allowed"
        )
    assert (await api.call("GET", f"{API}/training-job/not-a-uuid", status=422))["error"]["code"] == "invalid_parameter"
    assert (await api.call("GET", f"{API}/training-job/{uuid.uuid4()}", status=404))["error"]["code"] == "not_found"
    assert await api.scalar("SELECT count(*) FROM training_jobs") == 0


async def test_cancel_and_retry(api: Api) -> None:
    await _dataset(api.db, "ds-cancel")
    job = (await api.call("POST", f"{API}/trigger-training/goal", status=202, json={"dataset_id": "ds-cancel"}))["job"]
    cancelled = await api.call("POST", f"{API}/training-job/{job['job_id']}/cancel", status=200)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    again = await api.call("POST", f"{API}/training-job/{job['job_id']}/cancel", status=409)
    assert again["error"]["code"] == "job_finished"

    retried = await api.call("POST", f"{API}/training-job/{job['job_id']}/retry", status=202)
    assert retried["status"] == "queued" and retried["max_attempts"] == retried["attempts"] + 3
    conflict = await api.call("POST", f"{API}/training-job/{job['job_id']}/retry", status=409)
    assert "only a failed or cancelled job" in conflict["error"]["message"]

    # a running job: the cancel is a request its worker acts on (202)
    claimed = await factories.claim(api.db, "test-worker")
    assert claimed is not None and str(claimed.id) == job["job_id"]
    detail = await api.call("GET", f"{API}/training-job/{job['job_id']}", status=200)
    assert detail["status"] == "in_progress" and detail["worker"] == "test-worker"
    asked = await api.call("POST", f"{API}/training-job/{job['job_id']}/cancel", status=202)
    assert asked["status"] == "in_progress" and asked["cancel_requested"] is True

    # retry while another job already waits for the dataset: 409 naming that job
    await _dataset(api.db, "ds-cancel")
    async with api.db.transaction() as s:
        await JobQueue(s).finish_cancelled(
            claimed.lease,
            EndedAttempt(
                started_at=datetime.now(UTC), duration_seconds=1.0, error_type="Cancelled", message="cancelled"
            ),
        )
    waiting = (await api.call("POST", f"{API}/trigger-training/goal", status=202, json={"dataset_id": "ds-cancel"}))[
        "job"
    ]
    blocked = await api.call("POST", f"{API}/training-job/{job['job_id']}/retry", status=409)
    assert waiting["job_id"] in blocked["error"]["message"]
    assert (await api.call("POST", f"{API}/training-job/{uuid.uuid4()}/retry", status=404))["error"][
        "code"
    ] == "not_found"

    topic = api.settings.topic("training-status")
    events = await read_topic(
        api.settings, topic, until=lambda r: len([e for e in r if e["job_id"] == job["job_id"]]) >= 3
    )
    assert [e["status"] for e in events if e["job_id"] == job["job_id"]][:3] == ["queued", "cancelled", "queued"]


async def test_history_pages_newest_first_without_gaps_or_repeats(api: Api) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job = (await factories.failed_attempt(api.db, "ds-h", "goal")).job
    async with api.db.transaction() as s:
        await s.execute(text("DELETE FROM training_events"))
        for i in range(25):  # an attempt row per attempt; pairs share a start time
            await s.execute(
                text("""
                INSERT INTO training_events (id, job_id, attempt, dataset_id, model_type, status, worker, started_at)
                VALUES (gen_random_uuid(), :job, :attempt, 'ds-h', :mt, :status, 'w', :started)"""),
                {
                    "job": job.id,
                    "attempt": i + 1,
                    "mt": "goal" if i % 2 else "spending",
                    "status": "failed" if i % 5 == 0 else "completed",
                    "started": start + timedelta(minutes=i // 2),
                },
            )
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(5):
        page = await api.call(
            "GET", f"{API}/training-history", status=200, params={"limit": 10, **({"before": cursor} if cursor else {})}
        )
        seen += page["items"]
        cursor = page["next_before"]
        if cursor is None:
            break
    assert [len(seen), cursor] == [25, None]
    assert len({e["training_event_id"] for e in seen}) == 25
    keys = [(e["started_at"], e["training_event_id"]) for e in seen]
    assert keys == sorted(keys, reverse=True)
    goals = await api.call("GET", f"{API}/training-history", status=200, params={"model_type": "goal", "limit": 100})
    assert len(goals["items"]) == 12 and {e["model_type"] for e in goals["items"]} == {"goal"}
    failed = await api.call("GET", f"{API}/training-history", status=200, params={"status": "failed", "limit": 100})
    assert len(failed["items"]) == 5
    for params, code in (
        ({"before": "garbage"}, "invalid_cursor"),
        ({"limit": 101}, "invalid_query"),
        ({"limit": "ten"}, "invalid_query"),
        ({"model_type": "fraud"}, "invalid_query"),
        ({"status": "lost"}, "invalid_query"),
    ):
        assert (await api.call("GET", f"{API}/training-history", status=422, params=params))["error"]["code"] == code


async def test_versions_lineage_rollback_and_validation(api: Api) -> None:
    v1, _ = await _version(api.db, "goal", passed=True, auc=0.80)
    v2, _ = await _version(api.db, "goal", passed=True, auc=0.85)
    v3, _ = await _version(api.db, "goal", passed=True, auc=0.90)
    drift = Drift(
        reference_version=v3,
        psi={"income": 0.31, "months": 0.02},
        psi_max=0.31,
        level="major",
        features_only_in_candidate=["new_feature"],
        outcome=OutcomeShift(name="achieved_rate", champion=0.4, candidate=0.3, change=-0.1, relative_change=-0.25),
    )
    v4, refused = await _version(api.db, "goal", passed=False, auc=0.55, drift=drift)
    listing = await api.call("GET", f"{API}/model-versions", status=200, params={"model_type": "goal"})
    assert listing["champions"] == {"goal": v3}
    assert [(v["version"], v["is_champion"], v["parent_version"]) for v in listing["versions"]] == [
        (v4, False, v3),
        (v3, True, v2),
        (v2, False, v1),
        (v1, False, None),
    ]
    assert listing["versions"][0]["artifact"]["sha256"] == "ab" * 32
    assert listing["versions"][0]["info"]["cv_roc_auc"] == {"random_forest": 0.55}  # the manifest's info
    everything = await api.call("GET", f"{API}/model-versions", status=200)
    assert everything["champions"] == {"recommendation": None, "segmentation": None, "spending": None, "goal": v3}
    # /metrics: the champion, how old it is, and the largest PSI the latest candidate measured
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in (await api.call("GET", "/metrics", status=200)).splitlines()
        if line.startswith(("fcl_champion", "fcl_drift"))
    }
    assert figures.get('fcl_champion_version{model_type="goal"}') == v3, figures
    assert 0 <= figures['fcl_champion_age_seconds{model_type="goal"}'] < 600
    assert figures['fcl_drift_psi_max{model_type="goal"}'] == drift.psi_max
    assert not [k for k in figures if 'model_type="spending"' in k]  # no champion, no candidate: no series

    validation = await api.call("GET", f"{API}/validation-results/{refused}", status=200)
    assert (validation["candidate_version"], validation["baseline_version"]) == (v4, v3)
    assert (validation["passed"], validation["promoted"]) == (False, False)
    assert validation["drift"] == drift.model_dump(mode="json")
    earlier = await api.call("GET", f"{API}/model-versions", status=200, params={"model_type": "goal"})
    first_event = earlier["versions"][-1]["training_event_id"]
    assert (await api.call("GET", f"{API}/validation-results/{first_event}", status=200))["drift"] is None
    assert validation["checks"] == [
        {
            "metric": "roc_auc",
            "kind": "value",
            "value": 0.55,
            "baseline": None,
            "threshold": 0.6,
            "direction": "higher_is_better",
            "passed": False,
        }
    ]
    assert (await api.call("GET", f"{API}/validation-results/{uuid.uuid4()}", status=404))["error"][
        "code"
    ] == "not_found"
    failed = (await factories.failed_attempt(api.db, "ds-f", "goal", error_type="InvalidDataError")).training_event_id
    assert (await api.call("GET", f"{API}/validation-results/{failed}", status=404))["error"]["code"] == "not_validated"
    last_runs = (await api.call("GET", f"{API}/training-status", status=200))["model_types"]
    assert last_runs["goal"]["last_run"]["training_event_id"] == str(failed)
    assert last_runs["goal"]["last_run"]["error"]["type"] == "InvalidDataError"
    assert last_runs["spending"]["last_run"] is None

    # versions and the ledger a page at a time, newest first
    first_page = await api.call("GET", f"{API}/model-versions?model_type=goal&limit=2", status=200)
    assert [v["version"] for v in first_page["versions"]] == [v4, v3] and first_page["next_before"]
    older = await api.call(
        "GET", f"{API}/model-versions?model_type=goal&limit=2&before={first_page['next_before']}", status=200
    )
    assert [v["version"] for v in older["versions"]] == [v2, v1] and older["next_before"] is None
    one = await api.call("GET", f"{API}/model-versions?model_type=goal&version={v2}", status=200)
    assert [v["version"] for v in one["versions"]] == [v2]
    bad = await api.call("GET", f"{API}/model-versions?before=bm9wZQ", status=422)
    assert bad["error"]["code"] == "invalid_cursor"
    rollback = f"{API}/model-versions/goal/rollback"
    stale = await api.call("POST", rollback, status=409, json={"expected_version": v2})
    assert stale["error"]["code"] == "champion_not_expected" and f"version {v3}" in stale["error"]["message"]
    key = {"Idempotency-Key": "rb-1"}
    back = await api.call("POST", rollback, status=200, json={"expected_version": v3}, headers=key)
    assert (back["version"], back["previous_version"], back["reason"]) == (v2, v3, "rollback")
    # a retried or doubled call answers the first move again: it does not roll back twice
    again = await api.call("POST", rollback, status=200, json={"expected_version": v3}, headers=key)
    assert again == back
    reused = await api.call("POST", rollback, status=422, headers=key)  # the same key, another body
    assert reused["error"]["code"] == "idempotency_key_reused"
    back = await api.call("POST", rollback, status=200)
    assert (back["version"], back["previous_version"]) == (v1, v2)  # rollbacks stack
    none = await api.call("POST", f"{API}/model-versions/goal/rollback", status=409)
    assert none["error"]["code"] == "no_previous_champion"
    assert (await api.call("POST", f"{API}/model-versions/spending/rollback", status=409))["error"][
        "code"
    ] == "no_previous_champion"
    assert (await api.call("GET", f"{API}/training-status", status=200))["model_types"]["goal"][
        "champion_version"
    ] == v1
    topic = api.settings.topic("model-versions")
    events = await read_topic(api.settings, topic, until=lambda r: len(r) >= 5)
    assert [(e["version"], e["previous_version"], e["reason"]) for e in events] == [
        (v1, None, "validated"),
        (v2, v1, "validated"),
        (v3, v2, "validated"),
        (v2, v3, "rollback"),
        (v1, v2, "rollback"),
    ]
    assert all(e["_key"] == "goal" for e in events)


async def test_status_auto_trigger_health_metrics_and_openapi(api: Api) -> None:
    await _dataset(api.db, "ds-ready", samples=3, threshold=2)
    await _dataset(api.db, "ds-not-ready", samples=1, threshold=2)
    async with api.db.transaction() as s:
        await WorkerRepository(s).beat(worker_id="host:1", hostname="host", pid=1, current_job_ids=[], info={})
    admitted = await api.call("POST", f"{API}/auto-trigger-ready", status=202)
    assert [(a["dataset_id"], a["outcome"]) for a in admitted["admitted"]] == [("ds-ready", "created")]
    again = await api.call("POST", f"{API}/auto-trigger-ready", status=202)
    assert again["admitted"] == []  # its job waits already: the same state of a dataset makes one job

    status = await api.call("GET", f"{API}/training-status", status=200)
    assert status["queue"] == {"queued": 1, "in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
    assert [j["dataset_id"] for j in status["waiting"]] == ["ds-ready"]
    assert [w["worker_id"] for w in status["workers"]] == ["host:1"]
    assert set(status["model_types"]) == {"recommendation", "segmentation", "spending", "goal"}

    health = await api.call("GET", "/healthz", status=200)
    assert health == {"status": "ok", "database": "ok", "broker": "ok"}
    assert await api.call("GET", "/livez", status=200) == {"status": "ok"}
    ready = await api.call("GET", "/readyz", status=200)
    assert ready == {"status": "ready", "checked": ["database", "broker", "artifact store"], "not_ready": None}
    metrics = await api.call("GET", "/metrics", status=200)
    assert 'fcl_queue_jobs{model_type="goal",status="queued"} 1.0' in metrics
    assert 'fcl_queue_oldest_age_seconds{model_type="goal",status="queued"}' in metrics
    assert 'route="/coaching/continuous-learning/training-status",status="200"' in metrics
    assert "fcl_http_request_duration_seconds_bucket" in metrics
    assert "fcl_outbox_parked 0.0" in metrics and "fcl_outbox_pending" in metrics
    outbox = await api.call("GET", f"{API}/outbox", status=200)
    assert outbox["parked"] == [] and isinstance(outbox["pending"], int) and outbox["next_after"] is None

    # Parked rows (as the relay leaves them after the broker refused them 5 times: an ACL being
    # changed, say) are listed a page at a time and go out once unparked.
    async with api.db.transaction() as s:
        await s.execute(
            text(
                "INSERT INTO outbox (event_id, topic, key, payload, attempts, last_error, parked_at) "
                "SELECT gen_random_uuid(), 'model-versions', 'parked-' || i, "
                "jsonb_build_object('parked', i), 5, 'TopicAuthorizationFailedError', now() "
                "FROM generate_series(1, 3) AS i"
            )
        )
    first = await api.call("GET", f"{API}/outbox?limit=2", status=200)
    assert [p["key"] for p in first["parked"]] == ["parked-1", "parked-2"] and first["next_after"]
    rest = await api.call("GET", f"{API}/outbox?limit=2&after={first['next_after']}", status=200)
    assert [p["key"] for p in rest["parked"]] == ["parked-3"] and rest["next_after"] is None
    await api.call("POST", f"{API}/outbox/unpark", token=None, status=401, json={})
    one = await api.call("POST", f"{API}/outbox/unpark", status=200, json={"ids": [first["parked"][0]["id"]]})
    assert one == {"unparked": 1}
    assert (await api.call("POST", f"{API}/outbox/unpark", status=200))["unparked"] == 2  # no body: all
    published = await read_topic(
        api.settings,
        api.settings.topic("model-versions"),
        until=lambda r: {e["_key"] for e in r} >= {"parked-1", "parked-2", "parked-3"},
    )
    assert {e["_key"] for e in published} >= {"parked-1", "parked-2", "parked-3"}
    assert (await api.call("GET", f"{API}/outbox", status=200))["parked"] == []

    spec = await api.call("GET", "/openapi.json", status=200)
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    contract = {
        ("POST", "/trigger-training/{model_type}"),
        ("GET", "/training-status"),
        ("GET", "/training-job/{job_id}"),
        ("POST", "/training-job/{job_id}/cancel"),
        ("POST", "/training-job/{job_id}/retry"),
        ("POST", "/auto-trigger-ready"),
        ("GET", "/training-history"),
        ("GET", "/model-versions"),
        ("POST", "/model-versions/{model_type}/rollback"),
        ("GET", "/validation-results/{training_event_id}"),
        ("POST", "/model-versions/{model_type}/{version}/promote"),
        ("GET", "/model-versions/{model_type}/champion"),
        ("GET", "/model-versions/{model_type}/{version}/artifact"),
        ("GET", "/model-versions/{model_type}/{version}/live"),
        ("GET", "/model-versions/{model_type}/shadow"),
        ("POST", "/predictions"),
        ("PUT", "/model-versions/{model_type}/shadow"),
        ("DELETE", "/model-versions/{model_type}/shadow"),
        ("GET", "/outbox"),  # beyond the contract: what waits to be published, what was parked
        ("POST", "/outbox/unpark"),
        ("GET", "/datasets/{dataset_id}"),
        ("POST", "/datasets/{dataset_id}/reset-shape"),
        ("GET", "/dead-letters"),
        ("GET", "/dead-letters/{letter}"),
        ("POST", "/dead-letters/replay"),
        ("GET", "/training-job/{job_id}/triggers"),  # beyond the contract: every trigger, paged
    }
    assert {(m, API + p) for m, p in contract} | {
        ("GET", "/healthz"),
        ("GET", "/livez"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/"),
    } == operations
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            # every POST, the artifact download (models are company data) and the kept dead letters
            # (producers' data) need the token
            private = path.endswith("/artifact") or "/dead-letters" in path
            mutation = method in ("post", "put", "delete")
            assert ("security" in op) == (mutation or private), (method, path)
            if mutation or private:
                assert {"401", "403"} <= set(op["responses"])
            elif path not in ("/livez", "/readyz"):
                assert "401" in op["responses"]  # once FCL_READ_TOKEN is set
    history = spec["paths"][API + "/training-history"]["get"]
    assert {p["name"] for p in history["parameters"]} == {"limit", "model_type", "status", "before"}
    assert json.dumps(spec)  # plain JSON


async def test_cached_views_follow_every_committed_change(api: Api) -> None:
    """History and versions are served from memory until PostgreSQL reports a change (NOTIFY
    from migration 0005): a repeated read is a cache hit, and a commit from another connection
    (a trainer worker, a rollback) is seen by the next reads."""
    from fcl.web.context import SERVICES

    cache = api.client.app[SERVICES].cache
    assert cache.listener is not None
    for _ in range(100):  # the listener connects in the background
        if cache.listener.healthy:
            break
        await asyncio.sleep(0.05)
    v1, _ = await _version(api.db, "goal", passed=True, auc=0.8)
    # The commit's NOTIFY may reach the listener after the first read, which then is not kept:
    # read until a repeated read is served from memory.
    for _ in range(100):
        first = await api.call("GET", f"{API}/model-versions", status=200)
        hits = cache.hits
        if await api.call("GET", f"{API}/model-versions", status=200) == first and cache.hits == hits + 1:
            break
        await asyncio.sleep(0.05)
    assert cache.hits == hits + 1
    v2, event_id = await _version(api.db, "goal", passed=True, auc=0.9)  # committed elsewhere

    async def fresh() -> bool:
        listing = await api.call("GET", f"{API}/model-versions", status=200)
        return listing["champions"]["goal"] == v2 and len(listing["versions"]) == 2

    for _ in range(100):
        if await fresh():
            break
        await asyncio.sleep(0.05)
    assert await fresh()
    history = await api.call("GET", f"{API}/training-history", status=200)
    assert history["items"][0]["training_event_id"] == str(event_id)
    await api.call("POST", f"{API}/model-versions/goal/rollback", status=200)
    for _ in range(100):
        if (await api.call("GET", f"{API}/model-versions", status=200))["champions"]["goal"] == v1:
            break
        await asyncio.sleep(0.05)
    assert (await api.call("GET", f"{API}/model-versions", status=200))["champions"]["goal"] == v1


async def test_manual_promote_champion_and_artifact_download(api: Api, tmp_path: Path) -> None:
    """A version that was not promoted (or a former champion) is made the champion by hand, with
    the operator's reason in the ledger and a `model-versions` event (reason manual); the champion
    is served with its checksum; the artifact streams only with the token, checked, with its
    sha256 as ETag and Digest, and If-None-Match answers 304."""
    data = b"skops bytes of a model" * 100
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "goal-v.skops"
    path.write_bytes(data)
    first = await factories.record_version(
        api.db, "goal", passed=True, auc=0.8, artifact_path=str(path), sha256=digest, size=len(data)
    )
    refused = await factories.record_version(api.db, "goal", passed=False, auc=0.55)
    v1, v2 = first.model_version, refused.model_version
    assert (await api.call("GET", f"{API}/model-versions/goal/champion", status=200))["version"] == v1
    assert (await api.call("GET", f"{API}/model-versions/spending/champion", status=404))["error"]["code"] == (
        "no_champion"
    )

    body = {"reason": "judged by hand: the drift report says v2 generalises"}
    await api.call("POST", f"{API}/model-versions/goal/{v2}/promote", token=None, status=401, json=body)
    await api.call("POST", f"{API}/model-versions/goal/{v2}/promote", status=422, json={})
    await api.call("POST", f"{API}/model-versions/goal/99/promote", status=404, json=body)
    await api.call("POST", f"{API}/model-versions/goal/x/promote", status=422, json=body)
    stale = await api.call(
        "POST", f"{API}/model-versions/goal/{v2}/promote", status=409, json={**body, "expected_version": v2}
    )
    assert stale["error"]["code"] == "champion_not_expected"
    key = {"Idempotency-Key": "promote-v2"}
    moved = await api.call(
        "POST",
        f"{API}/model-versions/goal/{v2}/promote",
        status=200,
        json={**body, "expected_version": v1},
        headers=key,
    )
    assert (moved["version"], moved["previous_version"], moved["reason"], moved["note"]) == (
        v2,
        v1,
        "manual",
        body["reason"],
    )
    repeated = await api.call(
        "POST",
        f"{API}/model-versions/goal/{v2}/promote",
        status=200,
        json={**body, "expected_version": v1},
        headers=key,
    )
    assert repeated == moved  # the first answer again, not `already_champion`
    again = await api.call("POST", f"{API}/model-versions/goal/{v2}/promote", status=409, json=body)
    assert again["error"]["code"] == "already_champion"
    served = await api.call("GET", f"{API}/model-versions/goal/champion", status=200)
    assert (served["version"], served["move"]["reason"], served["model"]["is_champion"]) == (v2, "manual", True)
    events = await read_topic(
        api.settings,
        api.settings.topic_prefix + "model-versions",
        until=lambda r: any(e["reason"] == "manual" for e in r),
    )
    manual = [e for e in events if e["reason"] == "manual"]
    assert [(e["version"], e["previous_version"]) for e in manual] == [(v2, v1)]
    back = await api.call("POST", f"{API}/model-versions/goal/{v1}/promote", status=200, json=body)
    assert (back["version"], back["previous_version"]) == (v1, v2)

    url = f"{API}/model-versions/goal/{v1}/artifact"
    await api.call("GET", url, token=None, status=401)
    async with api.client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200 and await r.read() == data
        assert r.headers["ETag"] == f'"{digest}"'
        assert r.headers["Digest"] == "sha-256=" + base64.b64encode(bytes.fromhex(digest)).decode()
    async with api.client.get(url, headers={"Authorization": f"Bearer {TOKEN}", "If-None-Match": f'"{digest}"'}) as r:
        assert r.status == 304 and await r.read() == b""
    path.write_bytes(data[:-1] + b"!")  # corrupted on disk: refused, not served
    unreadable = await api.call("GET", url, status=503)
    assert unreadable["error"]["code"] == "artifact_unreadable" and "sha256" in unreadable["error"]["message"]
    await api.call("GET", f"{API}/model-versions/goal/{v2}/artifact", status=503)  # its file never existed
    await api.call("GET", f"{API}/model-versions/goal/77/artifact", status=404)

    # The ledger: every move, newest first, with who made it (the X-FCL-Actor header, when sent;
    # a huge one is cut to 200 characters).
    async with api.client.post(
        f"{API}/model-versions/goal/rollback",
        headers={"Authorization": f"Bearer {TOKEN}", "X-FCL-Actor": "alice@ops" + "x" * 5000},
    ) as r:
        assert r.status == 200 and (await r.json())["actor"] == f"operator (claims alice@ops{'x' * 191})"
    ledger = (await api.call("GET", f"{API}/model-versions?model_type=goal", status=200))["ledger"]
    assert [(m["reason"], m["version"]) for m in ledger] == [
        ("rollback", v2),
        ("manual", v1),
        ("manual", v2),
        ("validated", v1),
    ]
    assert ledger[1]["actor"] == "operator" and ledger[3]["actor"].startswith("job ")

    # A version the retention removed cannot serve again and its artifact is gone.
    async with api.db.transaction() as s:
        assert await RetentionRepository(s).mark("goal", keep_versions=1, keep_days=0) == [v1]
    assert (await api.call("GET", url, status=410))["error"]["code"] == "version_deleted"
    gone = await api.call("POST", f"{API}/model-versions/goal/{v1}/promote", status=409, json=body)
    assert gone["error"]["code"] == "version_deleted"
    listed = await api.call("GET", f"{API}/model-versions?model_type=goal", status=200)
    assert [v["deleted_at"] is not None for v in listed["versions"]] == [False, True]


async def test_a_long_artifact_streams_and_bad_bytes_never_arrive_whole(api: Api, tmp_path: Path) -> None:
    """An artifact of several chunks is streamed while it is hashed, its last chunk held back: the
    intact one arrives whole and equal; one whose last byte changed on disk has its connection
    aborted before the end, so the client never holds all of its bytes."""
    data = os.urandom(2 * 1024 * 1024 + 12345)  # three chunks
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "goal-long.skops"
    path.write_bytes(data)
    done = await factories.record_version(
        api.db, "goal", passed=True, auc=0.8, artifact_path=str(path), sha256=digest, size=len(data)
    )
    url = f"{API}/model-versions/goal/{done.model_version}/artifact"
    async with api.client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200 and r.content_length == len(data)
        assert await r.read() == data
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # the same size, the last byte changed
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with api.client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200  # the first chunks were good: sent before the end was read
            async for chunk in r.content.iter_chunked(65536):
                received += chunk
    assert len(received) < len(data) and data.startswith(received)
    path.write_bytes(data[: 1024 * 1024 * 2 + 1])  # shorter than recorded
    with pytest.raises(aiohttp.ClientPayloadError):
        async with api.client.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            await r.read()
