"""The jobs' endpoints: trigger, status, one job and its triggers, cancel, retry, auto-trigger, history."""

from __future__ import annotations

import json

from aiohttp import web

from fcl.contract.enums import JobStatus
from fcl.storage.errors import JobStateConflict
from fcl.storage.stores import IdempotencyKeyReused, ModelTypeMismatch, UnknownDataset
from fcl.web import schemas as s
from fcl.web.api import ApiError, Call
from fcl.web.context import HISTORY_TABLES, cached, idempotency_key, next_cursor, page_key, services_of


async def trigger_training(call: Call) -> tuple[int, s.TriggerResponse]:
    svc = services_of(call)
    model_type: str = call.path["model_type"]
    body: s.TriggerBody = call.body
    dataset_id = body.dataset_id or f"fincoach-{model_type}"
    key = idempotency_key(call)
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
    """One statement, its JSON built by PostgreSQL (storage.reads); never cached: requests that
    arrive together share the next read (web.cache.FreshReads), each read after its request came."""
    svc = services_of(call)
    seen = max(15.0, 3 * svc.settings.heartbeat_seconds)
    body = await svc.cache.fresh.read("training-status", lambda: svc.reads.training_status(workers_seen_seconds=seen))
    return web.Response(text=body, content_type="application/json")


async def training_job(call: Call) -> tuple[int, s.JobDetail]:
    svc = services_of(call)
    found = await svc.db.job(call.path["job_id"])
    if found is None:
        raise ApiError(404, "not_found", f"no job {call.path['job_id']}")
    return 200, s.JobDetail.of_job(*found)


async def job_triggers(call: Call) -> tuple[int, s.TriggerPage]:
    svc = services_of(call)
    q: s.PageQuery = call.query
    after = page_key(q.after, s.decode_time, str)
    page = await svc.db.triggers(call.path["job_id"], limit=q.limit, after=after)
    if page is None:
        raise ApiError(404, "not_found", f"no job {call.path['job_id']}")
    items = [
        s.TriggerView(event_id=t.event_id, priority=t.priority, source=t.source, received_at=t.received_at)
        for t in page
    ]
    return 200, s.TriggerPage(items=items, next_after=next_cursor(page, q.limit, lambda t: (t.received_at, t.event_id)))


async def cancel_job(call: Call) -> tuple[int, s.JobView]:
    svc = services_of(call)
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
    svc = services_of(call)
    job_id = call.path["job_id"]
    try:
        retried = await svc.db.retry(job_id, extra_attempts=svc.settings.attempts_for)
    except JobStateConflict as exc:
        raise ApiError(409, "job_not_retriable", str(exc)) from None
    if retried is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return 202, s.JobView.of(retried.job)


async def auto_trigger_ready(call: Call) -> tuple[int, s.AutoTriggerResponse]:
    svc = services_of(call)
    admissions = await svc.db.admit_ready(priority=svc.settings.default_priority)
    return 202, s.AutoTriggerResponse(
        admitted=[
            s.Admitted(
                dataset_id=a.request.dataset_id, model_type=a.request.model_type, job_id=a.job_id, outcome=a.outcome
            )
            for a in admissions
        ]
    )


async def training_history(call: Call) -> web.Response:
    svc = services_of(call)
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
    return cached(await svc.cache.get_or_load(key, HISTORY_TABLES, read))
