"""The operators' endpoints: health, readiness, outbox, datasets, dead letters, predictions over
HTTP, metrics, the OpenAPI document and the dashboard."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Literal

from aiohttp import web
from pydantic_core import PydanticSerializationError

from fcl.contract.probes import Check, readiness
from fcl.storage.migrate import at_head
from fcl.web import schemas as s
from fcl.web.api import ApiError, Call
from fcl.web.context import DASHBOARD, below, log, next_cursor, page_key, services_of


async def healthz(call: Call) -> tuple[int, s.Health]:
    """Database and broker reachable, without internals (the process log has the errors)."""
    svc = services_of(call)

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
    svc = services_of(call)
    checks: dict[str, Check] = {"database": functools.partial(at_head, svc.settings.database_url)}
    if svc.producer is not None:
        checks["broker"] = svc.producer.answers
    checks["artifact store"] = svc.artifacts.answers
    status, body = await readiness(checks)
    return status, s.Readiness.model_validate(body)


async def outbox_state(call: Call) -> tuple[int, s.OutboxState]:
    svc = services_of(call)
    q: s.PageQuery = call.query
    (after,) = page_key(q.after, below(2**63)) or (0,)
    pending, parked = await svc.db.outbox(limit=q.limit, after=after)
    return 200, s.OutboxState(
        pending=pending,
        parked=[s.ParkedEvent.model_validate(p) for p in parked],
        next_after=next_cursor(parked, q.limit, lambda p: (p.id,)),
    )


async def dataset(call: Call) -> tuple[int, s.DatasetView]:
    found = await services_of(call).db.dataset(call.path["dataset_id"])
    if found is None:
        raise ApiError(404, "unknown_dataset", f"no samples have arrived for dataset {call.path['dataset_id']!r}")
    return 200, s.DatasetView.of(found)


async def reset_shape(call: Call) -> tuple[int, s.DatasetView]:
    found = await services_of(call).db.reset_shape(call.path["dataset_id"])
    if found is None:
        raise ApiError(404, "unknown_dataset", f"no samples have arrived for dataset {call.path['dataset_id']!r}")
    return 200, s.DatasetView.of(found)


async def dead_letters(call: Call) -> tuple[int, s.DeadLetterPage]:
    q: s.DeadLetterQuery = call.query
    (after,) = page_key(q.after, below(2**63)) or (0,)
    page = await services_of(call).db.dead_letters(limit=q.limit, after=after, reason=q.reason, since=q.since)
    return 200, s.DeadLetterPage(
        items=[s.DeadLetterView.of(d) for d in page], next_after=next_cursor(page, q.limit, lambda d: (d.id,))
    )


async def dead_letter(call: Call) -> tuple[int, s.DeadLetterDetail]:
    found = await services_of(call).db.dead_letter(call.path["letter"])
    if found is None:
        raise ApiError(404, "not_found", f"no dead letter {call.path['letter']}")
    return 200, s.DeadLetterDetail.of_letter(found)


async def replay_dead_letters(call: Call) -> tuple[int, s.Replayed]:
    """Each kept input back to its topic, as it arrived: the same key and bytes, so the same
    idempotency (an input that was in fact stored meanwhile is a duplicate, not stored twice)."""
    svc = services_of(call)
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
    svc = services_of(call)
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
    return 200, s.Unparked(unparked=await services_of(call).db.unpark(body.ids))


async def metrics(call: Call) -> web.Response:
    svc = services_of(call)
    started = time.perf_counter()
    queue, training, outbox, models = await svc.db.figures()
    live = await svc.db.all_live_figures()
    body = svc.metrics.render(queue, training, outbox, models, live, scrape_seconds=time.perf_counter() - started)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi_json(call: Call) -> web.Response:
    return web.Response(body=services_of(call).openapi_bytes, content_type="application/json")


@functools.cache
def _dashboard_page() -> bytes:
    return DASHBOARD.read_bytes()  # read once per process, not per request


async def dashboard(call: Call) -> web.Response:
    return web.Response(body=_dashboard_page(), content_type="text/html", charset="utf-8")
