"""The endpoints of docs/contract.md ("HTTP API"): each handler reads through storage's repositories or
changes a job through `storage.queue` in one transaction, and answers with a model from
`web.schemas`. Storage writes the events of a change (a job queued or cancelled, a champion rolled
back) to the outbox in the same transaction; a relay sends them after the commit."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from fcl.contract import model_types
from fcl.contract.enums import JobStatus
from fcl.contract.probes import Check, readiness
from fcl.contract.settings import Settings
from fcl.messaging.producer import BackgroundProducer
from fcl.storage.artifacts import ArtifactChecksumError, ArtifactError, ArtifactStore, StoredArtifact
from fcl.storage.errors import AlreadyChampion, ChampionMoved, ChampionNotExpected, JobStateConflict, VersionDeleted
from fcl.storage.migrate import at_head
from fcl.storage.reads import ReadViews
from fcl.storage.stores import ApiStore, IdempotencyKeyReused, ModelTypeMismatch, UnknownDataset
from fcl.web import schemas as s
from fcl.web.api import ApiError, Call, Endpoint, PathParam
from fcl.web.cache import ResponseCache
from fcl.web.metrics import Metrics

PREFIX = "/coaching/continuous-learning"
DASHBOARD = Path(__file__).with_name("dashboard.html")


@dataclass
class Services:
    settings: Settings
    db: ApiStore
    producer: BackgroundProducer | None  # None when this process does not relay its events
    metrics: Metrics
    cache: ResponseCache
    reads: ReadViews
    openapi_bytes: bytes = b""
    artifacts: ArtifactStore = field(init=False)

    def __post_init__(self) -> None:
        self.artifacts = ArtifactStore.from_settings(self.settings)  # keeps its store clients


log = logging.getLogger("fcl.web")
SERVICES = web.AppKey("services", Services)
ARTIFACT_CHUNK = 1024 * 1024
ACTOR_HEADER = "X-FCL-Actor"


def _services(call: Call) -> Services:
    return call.request.app[SERVICES]


# -- path parameters --------------------------------------------------------------------------------
def _model_type(value: str) -> str:
    parsed = model_types.parse(value)
    if parsed is None:
        raise ApiError(404, "unknown_model_type", f"unknown model type {value[:100]!r}; known: {model_types.known()}")
    return parsed


def _uuid(what: str) -> Any:
    def parse(value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ApiError(422, "invalid_parameter", f"{what} must be a UUID, not {value[:100]!r}") from None

    return parse


MODEL_TYPE = PathParam(
    "model_type", {"type": "string", "enum": list(model_types.names())}, "a registered model type", _model_type
)
JOB_ID = PathParam("job_id", {"type": "string", "format": "uuid"}, "a job's id", _uuid("job_id"))


def _version(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 9 and int(value) >= 1):
        raise ApiError(422, "invalid_parameter", f"version must be a positive integer, not {value[:100]!r}")
    return int(value)


VERSION = PathParam("version", {"type": "integer", "minimum": 1}, "a version number of the model type", _version)


def _dataset_id(value: str) -> str:
    if not (0 < len(value) <= 256 and value.isprintable()):
        raise ApiError(422, "invalid_parameter", "a dataset id is 1-256 printable characters")
    return value


DATASET_ID = PathParam("dataset_id", {"type": "string", "maxLength": 256}, "a dataset's id", _dataset_id)


def _letter(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 18):
        raise ApiError(422, "invalid_parameter", f"a dead letter's id is a positive integer, not {value[:100]!r}")
    return int(value)


LETTER = PathParam("letter", {"type": "integer", "minimum": 1}, "a kept input's id", _letter)
TRAINING_EVENT_ID = PathParam(
    "training_event_id",
    {"type": "string", "format": "uuid"},
    "a training event's id (history, status events)",
    _uuid("training_event_id"),
)


# -- handlers ---------------------------------------------------------------------------------------
def _idempotency_key(call: Call) -> str | None:
    key = call.request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
        raise ApiError(422, "invalid_header", "Idempotency-Key must be 1-200 printable characters")
    return key


def _idempotency(call: Call, body: BaseModel) -> tuple[str, str] | None:
    """The request's Idempotency-Key with a digest of what it asks (path and parsed body)."""
    key = _idempotency_key(call)
    if key is None:
        return None
    asked = f"{call.request.method} {call.request.path}\0{body.model_dump_json()}"
    return key, hashlib.sha256(asked.encode()).hexdigest()


async def trigger_training(call: Call) -> tuple[int, s.TriggerResponse]:
    svc = _services(call)
    model_type: str = call.path["model_type"]
    body: s.TriggerBody = call.body
    dataset_id = body.dataset_id or f"fincoach-{model_type}"
    key = _idempotency_key(call)
    try:
        done = await svc.db.trigger(
            model_type=model_type, dataset_id=dataset_id, priority=body.priority, idempotency_key=key
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except UnknownDataset as exc:
        raise ApiError(404, "unknown_dataset", str(exc)) from None
    except ModelTypeMismatch as exc:
        raise ApiError(409, "model_type_mismatch", str(exc)) from None
    return 202, s.TriggerResponse(
        outcome=done.admission.outcome, trigger_event_id=done.event_id, job=s.JobView.of(done.job)
    )


async def training_status(call: Call) -> web.Response:
    """One statement, its JSON built by PostgreSQL (storage.reads); never cached."""
    svc = _services(call)
    body = await svc.reads.training_status(workers_seen_seconds=max(15.0, 3 * svc.settings.heartbeat_seconds))
    return web.Response(text=body, content_type="application/json")


async def training_job(call: Call) -> tuple[int, s.JobDetail]:
    svc = _services(call)
    found = await svc.db.job(call.path["job_id"])
    if found is None:
        raise ApiError(404, "not_found", f"no job {call.path['job_id']}")
    return 200, s.JobDetail.of_job(*found)


async def job_triggers(call: Call) -> tuple[int, s.TriggerPage]:
    svc = _services(call)
    q: s.PageQuery = call.query
    after = _page_key(q.after, s.decode_time, str)
    page = await svc.db.triggers(call.path["job_id"], limit=q.limit, after=after)
    if page is None:
        raise ApiError(404, "not_found", f"no job {call.path['job_id']}")
    items = [
        s.TriggerView(event_id=t.event_id, priority=t.priority, source=t.source, received_at=t.received_at)
        for t in page
    ]
    return 200, s.TriggerPage(items=items, next_after=_next(page, q.limit, lambda t: (t.received_at, t.event_id)))


async def cancel_job(call: Call) -> tuple[int, s.JobView]:
    svc = _services(call)
    job_id = call.path["job_id"]
    try:
        cancelled = await svc.db.cancel(job_id)
    except JobStateConflict as exc:
        raise ApiError(409, "job_finished", str(exc)) from None
    if cancelled is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    # A waiting job is cancelled now (200); a running one stops when its worker sees the request (202).
    return (200 if cancelled.job.status is JobStatus.CANCELLED else 202), s.JobView.of(cancelled.job)


async def retry_job(call: Call) -> tuple[int, s.JobView]:
    svc = _services(call)
    job_id = call.path["job_id"]
    try:
        retried = await svc.db.retry(job_id, extra_attempts=svc.settings.attempts_for)
    except JobStateConflict as exc:
        raise ApiError(409, "job_not_retriable", str(exc)) from None
    if retried is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return 202, s.JobView.of(retried.job)


async def auto_trigger_ready(call: Call) -> tuple[int, s.AutoTriggerResponse]:
    svc = _services(call)
    admissions = await svc.db.admit_ready(priority=svc.settings.default_priority)
    return 202, s.AutoTriggerResponse(
        admitted=[
            s.Admitted(
                dataset_id=a.request.dataset_id, model_type=a.request.model_type, job_id=a.job_id, outcome=a.outcome
            )
            for a in admissions
        ]
    )


HISTORY_TABLES = ("training_events",)
VERSION_TABLES = ("model_versions", "champion_ledger")


def _cached(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def training_history(call: Call) -> web.Response:
    svc = _services(call)
    q: s.HistoryQuery = call.query
    try:
        before = s.decode_cursor(q.before) if q.before else None
    except ValueError as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None

    async def read() -> bytes:
        page = await svc.reads.history(limit=q.limit, model_type=q.model_type, status=q.status, before=before)
        cursor = json.dumps(s.encode_cursor(*page.last) if page.last else None)
        return f'{{"items":{page.items},"next_before":{cursor}}}'.encode()

    key = ("history", q.limit, q.model_type, q.status, q.before)
    return _cached(await svc.cache.get_or_load(key, HISTORY_TABLES, read))


async def model_versions(call: Call) -> web.Response:
    svc = _services(call)
    q: s.ModelVersionsQuery = call.query
    after = _page_key(q.before, s.decode_time, str, _below(2**31))
    ledger_after = _page_key(q.ledger_before, s.decode_time, _below(2**63))

    async def read() -> bytes:
        page = await svc.reads.model_versions(
            q.model_type, limit=q.limit, version=q.version, after=after, ledger_after=ledger_after
        )
        more = json.dumps({"next_before": _key_of(page.next_versions), "ledger_next_before": _key_of(page.next_ledger)})
        return (page.body[:-1] + "," + more[1:]).encode()  # the two objects' members in one

    key = ("versions", q.model_type, q.version, q.limit, q.before, q.ledger_before)
    return _cached(await svc.cache.get_or_load(key, VERSION_TABLES, read))


def _key_of(parts: tuple[Any, ...] | None) -> str | None:
    """The opaque cursor of a row's sort key (timestamps in isoformat)."""
    if parts is None:
        return None
    return s.encode_key(*(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts))


def _next(page: list[Any], limit: int, key: Callable[[Any], tuple[Any, ...]]) -> str | None:
    """The cursor after a full page's last row; None when the page is not full (the end)."""
    return _key_of(key(page[-1])) if page and len(page) == limit else None


def _page_key(cursor: str | None, *kinds: Callable[[str], Any]) -> Any:
    """The sort key a previous page's cursor names, each part read by its kind (None: from the
    start); 422 for anything this API did not make."""
    if not cursor:
        return None
    try:
        return tuple(kind(part) for kind, part in zip(kinds, s.decode_key(cursor, len(kinds)), strict=True))
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_cursor", f"not a cursor from a previous page ({exc})") from None


def _below(bound: int) -> Callable[[str], int]:
    """A cursor part that is a positive integer below `bound` (a version, a row id)."""

    def read(part: str) -> int:
        number = int(part)
        if not 0 <= number < bound:
            raise ValueError("out of range")
        return number

    return read


def _actor(call: Call) -> str:
    """Who made a champion move through the API: the admin token's name (FCL_API_TOKEN_NAME), then
    what `X-FCL-Actor` claims when the caller names itself (the `fcl` CLI sends user@host). The
    token is what was checked; the claim is what the caller says."""
    name = _services(call).settings.api_token_name
    claimed = "".join(ch for ch in call.request.headers.get(ACTOR_HEADER, "") if ch.isprintable()).strip()
    return f"{name} (claims {claimed[:200]})" if claimed else name


async def rollback(call: Call) -> tuple[int, s.ChampionMoveView]:
    svc = _services(call)
    model_type = call.path["model_type"]
    body: s.RollbackBody = call.body
    try:
        move = await svc.db.rollback(
            model_type, actor=_actor(call), expected_version=body.expected_version, idempotency=_idempotency(call, body)
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except ChampionNotExpected as exc:
        raise ApiError(409, "champion_not_expected", str(exc)) from None
    except VersionDeleted as exc:
        raise ApiError(409, "version_deleted", str(exc)) from None
    except ChampionMoved:
        raise ApiError(409, "champion_moved", f"the {model_type} champion moved meanwhile; look again") from None
    if move is None:
        raise ApiError(409, "no_previous_champion", f"{model_type} has no earlier champion to roll back to")
    return 200, s.ChampionMoveView.of(move)


async def promote(call: Call) -> tuple[int, s.ChampionMoveView]:
    svc = _services(call)
    model_type, version = call.path["model_type"], call.path["version"]
    body: s.PromoteBody = call.body
    try:
        move = await svc.db.promote(
            model_type,
            version,
            note=body.reason,
            actor=_actor(call),
            expected_version=body.expected_version,
            idempotency=_idempotency(call, body),
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except ChampionNotExpected as exc:
        raise ApiError(409, "champion_not_expected", str(exc)) from None
    except LookupError as exc:
        raise ApiError(404, "unknown_version", str(exc)) from None
    except VersionDeleted as exc:
        raise ApiError(409, "version_deleted", str(exc)) from None
    except AlreadyChampion as exc:
        raise ApiError(409, "already_champion", str(exc)) from None
    except ChampionMoved:
        raise ApiError(409, "champion_moved", f"the {model_type} champion moved meanwhile; look again") from None
    return 200, s.ChampionMoveView.of(move)


async def champion(call: Call) -> tuple[int, s.ChampionView]:
    model_type = call.path["model_type"]
    found = await _services(call).db.champion(model_type)
    if found is None:
        raise ApiError(404, "no_champion", f"{model_type} has no champion yet")
    move, version = found
    return 200, s.ChampionView(
        model_type=model_type,
        version=version.version,
        move=s.ChampionMoveView.of(move),
        model=s.ModelVersionView.of(version, move.version),
    )


async def live(call: Call) -> tuple[int, s.LiveView]:
    model_type, version = call.path["model_type"], call.path["version"]
    q: s.LiveQuery = call.query
    db = _services(call).db
    found = await db.live_figures(model_type, version, q.window)
    if found is None:
        if await db.version(model_type, version) is None:
            raise ApiError(404, "no_such_version", f"{model_type} has no version {version}")
        return 200, s.LiveView(model_type=model_type, version=version, window=q.window, computed_at=None, predictions=0)
    figures, computed_at = found
    fields = {k: v for k, v in figures.items() if k in s.LiveView.model_fields and k not in ("window", "computed_at")}
    return 200, s.LiveView.model_validate({**fields, "window": q.window, "computed_at": computed_at})


async def shadow(call: Call) -> tuple[int, s.ShadowView]:
    model_type = call.path["model_type"]
    q: s.LiveQuery = call.query
    db = _services(call).db
    challenger, found = await db.shadow(model_type, q.window)
    record = None
    if challenger is not None:
        version, current = await db.version(model_type, challenger.version), await db.champion(model_type)
        if version is not None:
            record = s.ModelVersionView.of(version, current[0].version if current else None)
    return 200, _shadow_view(model_type, q.window, challenger, found, record)


def _shadow_view(
    model_type: str, window: str, challenger: Any, found: Any, record: s.ModelVersionView | None
) -> s.ShadowView:
    view = s.ShadowView(
        model_type=model_type,
        window=window,
        model=record,
        challenger=None if challenger is None else challenger.version,
        set_by=None if challenger is None else challenger.actor,
        set_at=None if challenger is None else challenger.set_at,
    )
    if challenger is None or found is None:
        return view
    figures, computed_at = found
    if (figures.get("challenger") or {}).get("version") != challenger.version:
        return view  # a comparison with an earlier challenger: not this one's
    return view.model_copy(
        update={
            "computed_at": computed_at,
            "predictions": int(figures.get("predictions") or 0),
            "with_outcome": int(figures.get("with_outcome") or 0),
            "evaluated_pairs": int(figures.get("evaluated_pairs") or 0),
            "champion": s.ShadowSide.model_validate(figures["champion"]),
            "shadow": s.ShadowSide.model_validate(figures["challenger"]),
            "comparison": figures.get("comparison"),
        }
    )


async def set_shadow(call: Call) -> tuple[int, s.ShadowView]:
    svc = _services(call)
    model_type = call.path["model_type"]
    body: s.ShadowBody = call.body
    version = await svc.db.version(model_type, body.version)
    if version is None:
        raise ApiError(404, "unknown_version", f"{model_type} has no version {body.version}")
    if version.deleted_at is not None:
        raise ApiError(409, "version_deleted", f"{model_type} v{body.version} was removed by the retention")
    current = await svc.db.champion(model_type)
    if current is not None and current[0].version == body.version:
        raise ApiError(409, "already_champion", f"{model_type} v{body.version} is the champion: it serves already")
    challenger = await svc.db.set_shadow(model_type, body.version, _actor(call))
    if challenger is None:
        raise ApiError(404, "unknown_version", f"{model_type} has no version {body.version}")
    log.info("%s: v%s is the shadow challenger (%s)", model_type, body.version, challenger.actor)
    record = s.ModelVersionView.of(version, current[0].version if current else None)
    return 200, _shadow_view(model_type, "day", challenger, None, record)


async def clear_shadow(call: Call) -> tuple[int, s.ShadowCleared]:
    model_type = call.path["model_type"]
    was = await _services(call).db.clear_shadow(model_type)
    if was is not None:
        log.info("%s: v%s is no longer the shadow challenger (%s)", model_type, was, _actor(call))
    return 200, s.ShadowCleared(model_type=model_type, cleared=was)


async def artifact(call: Call) -> web.StreamResponse:
    """The artifact's bytes, streamed from the store in chunks while they are hashed, one chunk
    held back: the last is sent only once the whole has matched the recorded sha256 and size. An
    artifact of one chunk that fails answers 503; a longer one that fails has its connection
    aborted before its last chunk, so a client never receives the whole of bytes that fail."""
    svc = _services(call)
    model_type, number = call.path["model_type"], call.path["version"]
    version = await svc.db.version(model_type, number)
    if version is None:
        raise ApiError(404, "unknown_version", f"{model_type} has no version {number}")
    if version.deleted_at is not None:
        raise ApiError(
            410, "version_deleted", f"{model_type} v{number} was removed by the retention; its artifact is gone"
        )
    etag = f'"{version.artifact_sha256}"'
    digest = "sha-256=" + base64.b64encode(bytes.fromhex(version.artifact_sha256)).decode()
    headers = {"ETag": etag, "Digest": digest, "Cache-Control": "private, no-transform"}
    wanted = {t.strip() for t in call.request.headers.get("If-None-Match", "").split(",") if t.strip()}
    if etag in wanted or f"W/{etag}" in wanted or "*" in wanted:
        return web.Response(status=304, headers=headers)
    stored = StoredArtifact(
        path=version.artifact_path,
        sha256=version.artifact_sha256,
        size=version.artifact_size,
        format=version.artifact_format,
    )
    name = f"{model_type}-v{number}.{version.artifact_format}"
    chunks = svc.artifacts.chunks(stored.path, ARTIFACT_CHUNK)
    hasher, got = hashlib.sha256(), 0
    response: web.StreamResponse | None = None

    def unreadable(why: str) -> ApiError:
        return ApiError(503, "artifact_unreadable", f"the artifact of {model_type} v{number} cannot be read: {why}")

    try:
        held = await asyncio.to_thread(next, chunks, b"")
        hasher.update(held)
        got = len(held)
        while True:
            following = await asyncio.to_thread(next, chunks, None)
            if following is None:
                break
            hasher.update(following)
            got += len(following)
            if got > stored.size:
                raise ArtifactChecksumError(f"{stored.path}: more than the {stored.size} bytes recorded")
            if response is None:
                response = web.StreamResponse(
                    headers={**headers, "Content-Disposition": f'attachment; filename="{name}"'}
                )
                response.content_type = "application/octet-stream"
                response.content_length = stored.size
                await response.prepare(call.request)
            await response.write(held)
            held = following
        if got != stored.size:
            raise ArtifactChecksumError(f"{stored.path}: {got} bytes in the store, {stored.size} recorded")
        if hasher.hexdigest() != stored.sha256:
            raise ArtifactChecksumError(
                f"{stored.path}: sha256 {hasher.hexdigest()} in the store, {stored.sha256} recorded"
            )
    except (ArtifactError, OSError) as exc:
        if response is None:
            raise unreadable(str(exc)) from None
        log.error("the artifact of %s v%s failed while it was sent; connection aborted: %s", model_type, number, exc)
        if call.request.transport is not None:
            call.request.transport.abort()  # the client sees a short body: never the whole of bad bytes
        return response
    if response is None:
        response = web.StreamResponse(headers={**headers, "Content-Disposition": f'attachment; filename="{name}"'})
        response.content_type = "application/octet-stream"
        response.content_length = stored.size
        await response.prepare(call.request)
    await response.write(held)
    await response.write_eof()
    return response


async def validation_results(call: Call) -> tuple[int, s.ValidationView]:
    svc = _services(call)
    event_id = call.path["training_event_id"]
    found = await svc.db.validation(event_id)
    if found is None:
        raise ApiError(404, "not_found", f"no training event {event_id}")
    event, checks, version = found.event, found.checks, found.version
    if version is None:
        raise ApiError(
            404,
            "not_validated",
            f"training event {event_id} ended {event.status.value}; only a completed training is validated",
        )
    return 200, s.ValidationView(
        training_event_id=event.id,
        job_id=event.job_id,
        model_type=event.model_type,
        candidate_version=version.version,
        baseline_version=version.parent_version,
        metrics=event.metrics,
        checks=checks,
        passed=bool(event.validation_passed),
        promoted=bool(event.promoted),
        verdict=event.verdict,
        message=event.verdict_message,
        drift=event.drift,
    )


async def healthz(call: Call) -> tuple[int, s.Health]:
    """Database and broker reachable, without internals (the process log has the errors)."""
    svc = _services(call)

    async def database() -> Literal["ok", "unreachable"]:
        try:
            async with asyncio.timeout(2.0):
                await svc.db.ping()
        except Exception as exc:  # noqa: BLE001 - reported as unreachable, logged
            log.warning("/healthz: the database did not answer: %s", exc)
            return "unreachable"
        return "ok"

    async def broker() -> Literal["ok", "unreachable", "not configured"]:
        if svc.producer is None:
            return "not configured"
        state = await svc.producer.broker_ok()
        if state != "ok":
            log.warning("/healthz: the broker did not answer: %s", state)
            return "unreachable"
        return "ok"

    db_state, broker_state = await asyncio.gather(database(), broker())
    ok = db_state == "ok" and broker_state == "ok"
    return (200 if ok else 503), s.Health(status="ok" if ok else "degraded", database=db_state, broker=broker_state)


async def livez(call: Call) -> tuple[int, s.Liveness]:
    """The event loop answers (a relay or listener that ends ends the process)."""
    return 200, s.Liveness(status="ok")


async def readyz(call: Call) -> tuple[int, s.Readiness]:
    """The database is at head, the broker answers (when this process relays events) and the
    artifact store answers; a 503 names what is not ready and nothing more."""
    svc = _services(call)
    checks: dict[str, Check] = {"database": functools.partial(at_head, svc.settings.database_url)}
    if svc.producer is not None:
        checks["broker"] = svc.producer.answers
    checks["artifact store"] = svc.artifacts.answers
    status, body = await readiness(checks)
    return status, s.Readiness.model_validate(body)


async def outbox_state(call: Call) -> tuple[int, s.OutboxState]:
    svc = _services(call)
    q: s.PageQuery = call.query
    (after,) = _page_key(q.after, _below(2**63)) or (0,)
    pending, parked = await svc.db.outbox(limit=q.limit, after=after)
    return 200, s.OutboxState(
        pending=pending,
        parked=[s.ParkedEvent.model_validate(p) for p in parked],
        next_after=_next(parked, q.limit, lambda p: (p.id,)),
    )


async def dataset(call: Call) -> tuple[int, s.DatasetView]:
    found = await _services(call).db.dataset(call.path["dataset_id"])
    if found is None:
        raise ApiError(404, "unknown_dataset", f"no samples have arrived for dataset {call.path['dataset_id']!r}")
    return 200, s.DatasetView.of(found)


async def reset_shape(call: Call) -> tuple[int, s.DatasetView]:
    found = await _services(call).db.reset_shape(call.path["dataset_id"])
    if found is None:
        raise ApiError(404, "unknown_dataset", f"no samples have arrived for dataset {call.path['dataset_id']!r}")
    return 200, s.DatasetView.of(found)


async def dead_letters(call: Call) -> tuple[int, s.DeadLetterPage]:
    q: s.DeadLetterQuery = call.query
    (after,) = _page_key(q.after, _below(2**63)) or (0,)
    page = await _services(call).db.dead_letters(limit=q.limit, after=after, reason=q.reason, since=q.since)
    return 200, s.DeadLetterPage(
        items=[s.DeadLetterView.of(d) for d in page], next_after=_next(page, q.limit, lambda d: (d.id,))
    )


async def dead_letter(call: Call) -> tuple[int, s.DeadLetterDetail]:
    found = await _services(call).db.dead_letter(call.path["letter"])
    if found is None:
        raise ApiError(404, "not_found", f"no dead letter {call.path['letter']}")
    return 200, s.DeadLetterDetail.of_letter(found)


async def replay_dead_letters(call: Call) -> tuple[int, s.Replayed]:
    """Each kept input back to its topic, as it arrived: the same key and bytes, so the same
    idempotency (an input that was in fact stored meanwhile is a duplicate, not stored twice)."""
    svc = _services(call)
    body: s.ReplayBody = call.body
    if body.ids is None and body.reason is None and body.since is None:
        raise ApiError(422, "invalid_body", "say which letters to replay: `ids`, `reason` or `since`")
    if svc.producer is None:
        raise ApiError(503, "no_producer", "this fcl web process does not publish to Kafka")
    letters = await svc.db.for_replay(ids=body.ids, reason=body.reason, since=body.since, limit=body.limit)
    sent: list[int] = []
    try:
        for letter in letters:
            await (await svc.producer.send(letter.source_topic, letter.key, letter.value or b""))
            sent.append(letter.id)
    except Exception as exc:  # noqa: BLE001 - the broker's answer, reported; what went is recorded
        await svc.db.replayed(sent)
        raise ApiError(503, "broker_unavailable", f"replayed {len(sent)}, then the broker refused: {exc}") from None
    await svc.db.replayed(sent)
    return 200, s.Replayed(replayed=len(sent), ids=sent)


async def post_predictions(call: Call) -> tuple[int, s.PredictionsAccepted]:
    """Predictions onto `fcl.predictions`, keyed by model type, as a watcher logs them: the same door
    then (limits, dead letters for what the deeper checks refuse, once by event_id). The events
    are checked against the event's schema here first (422 names the field); a broker that refuses
    answers 503 with how many went, and sending them all again records each once."""
    svc = _services(call)
    body: s.PredictionsBody = call.body
    if svc.producer is None:
        raise ApiError(503, "no_producer", "this fcl web process does not publish to Kafka")
    topic = svc.settings.topic("predictions")
    try:
        records = [(p.model_type.encode(), p.model_dump_json(exclude_none=True).encode()) for p in body.predictions]
    except (UnicodeEncodeError, PydanticSerializationError):
        raise ApiError(
            422, "invalid_body", "the predictions hold text that is not valid UTF-8 (a lone surrogate)"
        ) from None
    sent = 0
    try:
        deliveries = [await svc.producer.send(topic, key, value) for key, value in records]
        for delivery in deliveries:
            await delivery
            sent += 1
    except Exception as exc:  # noqa: BLE001 - the broker's answer, reported
        raise ApiError(
            503, "broker_unavailable", f"{sent} of {len(body.predictions)} sent, then the broker refused: {exc}"
        ) from None
    return 202, s.PredictionsAccepted(accepted=sent, topic=topic)


async def unpark(call: Call) -> tuple[int, s.Unparked]:
    body: s.UnparkBody = call.body
    return 200, s.Unparked(unparked=await _services(call).db.unpark(body.ids))


async def metrics(call: Call) -> web.Response:
    svc = _services(call)
    started = time.perf_counter()
    queue, training, outbox, models = await svc.db.figures()
    live = await svc.db.all_live_figures()
    body = svc.metrics.render(queue, training, outbox, models, live, scrape_seconds=time.perf_counter() - started)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi_json(call: Call) -> web.Response:
    return web.Response(body=_services(call).openapi_bytes, content_type="application/json")


@functools.cache
def _dashboard_page() -> bytes:
    return DASHBOARD.read_bytes()  # read once per process, not per request


async def dashboard(call: Call) -> web.Response:
    return web.Response(body=_dashboard_page(), content_type="text/html", charset="utf-8")


def _ok(model: type[Any], text: str, status: int = 200) -> dict[int, tuple[type[Any], str]]:
    return {status: (model, text)}


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        PREFIX + "/trigger-training/{model_type}",
        trigger_training,
        "Queue a training job for a dataset (admission rules: joins a waiting job, one follow-up while one runs)",
        "jobs",
        _ok(s.TriggerResponse, "admitted", 202),
        (MODEL_TYPE,),
        body=s.TriggerBody,
        access="admin",
        errors=(404, 409, 422),
        description="An `Idempotency-Key` header makes a repeated request return the same job; "
        "the same key with another request is refused (422).",
    ),
    Endpoint(
        "GET",
        PREFIX + "/training-status",
        training_status,
        "Queue counts, waiting and running jobs, worker heartbeats, per model type its champion and last run",
        "status",
        _ok(s.TrainingStatus, "the service's state"),
    ),
    Endpoint(
        "GET",
        PREFIX + "/training-job/{job_id}",
        training_job,
        "One job with its timeline and attempts",
        "jobs",
        _ok(s.JobDetail, "the job"),
        (JOB_ID,),
        errors=(404,),
    ),
    Endpoint(
        "GET",
        PREFIX + "/training-job/{job_id}/triggers",
        job_triggers,
        "Every event that asked for a job, in the order they arrived, with cursor paging",
        "jobs",
        _ok(s.TriggerPage, "a page"),
        (JOB_ID,),
        query=s.PageQuery,
        errors=(404, 422),
    ),
    Endpoint(
        "POST",
        PREFIX + "/training-job/{job_id}/cancel",
        cancel_job,
        "Cancel a waiting job (200) or ask a running one to stop (202)",
        "jobs",
        {200: (s.JobView, "cancelled"), 202: (s.JobView, "the running job will stop")},
        (JOB_ID,),
        access="admin",
        errors=(404, 409, 422),
    ),
    Endpoint(
        "POST",
        PREFIX + "/training-job/{job_id}/retry",
        retry_job,
        "Put a failed or cancelled job back in the queue with fresh attempts",
        "jobs",
        _ok(s.JobView, "queued again", 202),
        (JOB_ID,),
        access="admin",
        errors=(404, 409, 422),
    ),
    Endpoint(
        "POST",
        PREFIX + "/auto-trigger-ready",
        auto_trigger_ready,
        "Queue a job for every dataset whose counter reached its threshold",
        "jobs",
        _ok(s.AutoTriggerResponse, "what was admitted", 202),
        access="admin",
    ),
    Endpoint(
        "GET",
        PREFIX + "/training-history",
        training_history,
        "Training events (one per attempt), newest first, with cursor paging",
        "history",
        _ok(s.HistoryPage, "a page"),
        query=s.HistoryQuery,
    ),
    Endpoint(
        "GET",
        PREFIX + "/model-versions",
        model_versions,
        "Model versions with metrics, artifact checksum, lineage and which one is champion",
        "versions",
        _ok(s.ModelVersions, "versions"),
        query=s.ModelVersionsQuery,
    ),
    Endpoint(
        "POST",
        PREFIX + "/model-versions/{model_type}/rollback",
        rollback,
        "Make the previous champion the champion again (rollbacks stack)",
        "versions",
        _ok(s.ChampionMoveView, "the new champion"),
        (MODEL_TYPE,),
        body=s.RollbackBody,
        access="admin",
        errors=(404, 409, 422),
        description="The body is optional: `expected_version` refuses the rollback (409) unless that version "
        "serves. An `Idempotency-Key` header makes a repeated request answer the first move again; the same "
        "key with another request is refused (422).",
    ),
    Endpoint(
        "POST",
        PREFIX + "/model-versions/{model_type}/{version}/promote",
        promote,
        "Make a recorded version the champion by hand (reason `manual`; the body's reason is kept in the ledger)",
        "versions",
        _ok(s.ChampionMoveView, "the new champion"),
        (MODEL_TYPE, VERSION),
        body=s.PromoteBody,
        access="admin",
        errors=(404, 409, 422),
        description="`expected_version` refuses the promote (409) unless that version serves; "
        "`Idempotency-Key` as for rollback.",
    ),
    Endpoint(
        "GET",
        PREFIX + "/model-versions/{model_type}/champion",
        champion,
        "The serving version of a model type, with its checksum, metrics and manifest",
        "versions",
        _ok(s.ChampionView, "the champion"),
        (MODEL_TYPE,),
        errors=(404,),
    ),
    Endpoint(
        "POST",
        PREFIX + "/predictions",
        post_predictions,
        "Log predictions an app made (the serve token may: they are data, not a change to fcl)",
        "versions",
        _ok(s.PredictionsAccepted, "handed to the predictions topic", 202),
        body=s.PredictionsBody,
        access="serve",
        errors=(413, 422, 503),
        description="The same events as on `fcl.predictions`; the topic's door applies to each (dead "
        "letters for what its checks refuse, recorded once by event_id).",
    ),
    Endpoint(
        "GET",
        PREFIX + "/model-versions/{model_type}/shadow",
        shadow,
        "The shadow challenger, and the champion and challenger compared over the same outcomes (by window)",
        "versions",
        _ok(s.ShadowView, "the challenger (null: none) and the last comparison (null until a trainer made one)"),
        (MODEL_TYPE,),
        query=s.LiveQuery,
        errors=(404, 422),
    ),
    Endpoint(
        "PUT",
        PREFIX + "/model-versions/{model_type}/shadow",
        set_shadow,
        "Name the version the watchers also score on the champion's inputs (never served)",
        "versions",
        _ok(s.ShadowView, "the challenger"),
        (MODEL_TYPE,),
        body=s.ShadowBody,
        access="admin",
        errors=(404, 409, 422),
        description="Replaces the model type's challenger, if any. The champion itself is refused (409). "
        "Promote the challenger with the promote route once the comparison says so.",
    ),
    Endpoint(
        "DELETE",
        PREFIX + "/model-versions/{model_type}/shadow",
        clear_shadow,
        "Stop scoring a shadow challenger for the model type",
        "versions",
        _ok(s.ShadowCleared, "the challenger there was"),
        (MODEL_TYPE,),
        access="admin",
        errors=(404, 422),
    ),
    Endpoint(
        "GET",
        PREFIX + "/model-versions/{model_type}/{version}/live",
        live,
        "A served version's live figures: its predictions joined with their outcomes, input drift (by window)",
        "versions",
        _ok(s.LiveView, "the live figures (all counts 0 and computed_at null before the first evaluation)"),
        (MODEL_TYPE, VERSION),
        query=s.LiveQuery,
        errors=(404, 422),
    ),
    Endpoint(
        "GET",
        PREFIX + "/model-versions/{model_type}/{version}/artifact",
        artifact,
        "A version's artifact (the serve or admin token: models are company data); ETag and Digest carry its sha256",
        "versions",
        {},
        (MODEL_TYPE, VERSION),
        access="serve",
        errors=(404, 410, 422, 503),
        raw_content={
            200: ("application/octet-stream", "the artifact's bytes, checked against its sha256 and size"),
            304: ("application/octet-stream", "If-None-Match matched the ETag: nothing sent"),
        },
    ),
    Endpoint(
        "GET",
        PREFIX + "/validation-results/{training_event_id}",
        validation_results,
        "The validation of one training event, check by check",
        "versions",
        _ok(s.ValidationView, "the validation"),
        (TRAINING_EVENT_ID,),
        errors=(404, 422),
    ),
    Endpoint(
        "GET",
        PREFIX + "/outbox",
        outbox_state,
        "Events waiting to be published, and those the relay parked after the broker refused them (paged)",
        "operations",
        _ok(s.OutboxState, "the outbox"),
        query=s.PageQuery,
        errors=(422,),
    ),
    Endpoint(
        "GET",
        PREFIX + "/datasets/{dataset_id}",
        dataset,
        "A dataset: its counter, threshold and sample shape with its version",
        "datasets",
        _ok(s.DatasetView, "the dataset"),
        (DATASET_ID,),
        errors=(404, 422),
    ),
    Endpoint(
        "POST",
        PREFIX + "/datasets/{dataset_id}/reset-shape",
        reset_shape,
        "Forget a dataset's sample shape: the next event's shape starts its next shape version",
        "datasets",
        _ok(s.DatasetView, "the dataset, its shape forgotten"),
        (DATASET_ID,),
        access="admin",
        errors=(404, 422),
    ),
    Endpoint(
        "GET",
        PREFIX + "/dead-letters",
        dead_letters,
        "Refused inputs kept whole for replay, oldest first (paged; `reason` and `since` filter)",
        "operations",
        _ok(s.DeadLetterPage, "a page"),
        query=s.DeadLetterQuery,
        access="admin",
        errors=(422,),
    ),
    Endpoint(
        "GET",
        PREFIX + "/dead-letters/{letter}",
        dead_letter,
        "One refused input with its value as it arrived",
        "operations",
        _ok(s.DeadLetterDetail, "the letter"),
        (LETTER,),
        access="admin",
        errors=(404, 422),
    ),
    Endpoint(
        "POST",
        PREFIX + "/dead-letters/replay",
        replay_dead_letters,
        "Send kept inputs back to the topic they came from, as they arrived, once their cause is fixed",
        "operations",
        _ok(s.Replayed, "what was sent"),
        body=s.ReplayBody,
        access="admin",
        errors=(422, 503),
    ),
    Endpoint(
        "POST",
        PREFIX + "/outbox/unpark",
        unpark,
        "Put parked events back in line once their cause is put right (all, or the `ids` given)",
        "operations",
        _ok(s.Unparked, "how many went back"),
        body=s.UnparkBody,
        access="admin",
    ),
    Endpoint(
        "GET",
        "/healthz",
        healthz,
        "Database and broker reachable",
        "operations",
        {200: (s.Health, "both reachable"), 503: (s.Health, "one is not")},
    ),
    Endpoint("GET", "/livez", livez, "The process answers", "operations", {200: (s.Liveness, "alive")}, access="probe"),
    Endpoint(
        "GET",
        "/readyz",
        readyz,
        "Ready to serve: the database at head, the broker and the artifact store answer",
        "operations",
        {200: (s.Readiness, "ready"), 503: (s.Readiness, "the names of what is not ready")},
        access="probe",
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "operations",
        {},
        raw_content={200: ("text/plain", "Prometheus text format 0.0.4")},
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        openapi_json,
        "This document",
        "operations",
        {},
        raw_content={200: ("application/json", "OpenAPI 3.1")},
    ),
    Endpoint(
        "GET",
        "/",
        dashboard,
        "The dashboard",
        "operations",
        {},
        raw_content={200: ("text/html", "one page that refreshes itself")},
    ),
]
