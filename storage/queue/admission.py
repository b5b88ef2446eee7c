"""A batch of triggers admitted by `ADMIT_SQL`: its parameters, its rows, and the outcome of each
trigger in request order. `JobQueue.admit` runs the statement in the caller's session;
`admit_on` runs it on a plain asyncpg connection in the caller's transaction, which the streams
worker's hot path uses (no ORM session around one statement)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg

from fcl.contract.enums import AdmissionOutcome
from fcl.contract.topics import Topic
from fcl.storage.db import Statement
from fcl.storage.entities import Admission, AdmissionPolicy, TriggerRequest
from fcl.storage.queue.statements import ADMIT_SQL


class AdmitRow(NamedTuple):
    """A row of ADMIT_SQL: a trigger seen before (`known`), or a job joined or created."""

    kind: str
    scope: str
    event_id: str | None
    id: uuid.UUID
    priority: int
    attempts: int


def key(request: TriggerRequest) -> str:
    """The pair a trigger asks a job for (training_jobs.dedupe_key)."""
    return f"{request.dataset_id}/{request.model_type}"


def admission_params(requests: Sequence[TriggerRequest], policy: AdmissionPolicy) -> dict[str, Any]:
    return {
        "events": [r.event_id for r in requests],
        "datasets": [r.dataset_id for r in requests],
        "types": [r.model_type for r in requests],
        "priorities": [r.priority for r in requests],
        "sources": [r.source for r in requests],
        "attempts": [policy.attempts_for(r.model_type) for r in requests],
        "traces": [r.trace_context for r in requests],
        "reasons": [json.dumps(r.reason) if r.reason is not None else None for r in requests],
        "ageing": policy.ageing_step,
        "status_topic": Topic.TRAINING_STATUS.value,
    }


def raced_requests(requests: Sequence[TriggerRequest], rows: Sequence[AdmitRow]) -> list[int]:
    """The requests of a pair another transaction queued while the statement ran (its insert
    conflicted): their triggers were not written; admitted again, they join that job."""
    known = {(r.event_id, r.scope) for r in rows if r.kind == "known"}
    jobs = {r.scope for r in rows if r.kind != "known"}
    return [i for i, r in enumerate(requests) if (r.event_id, key(r)) not in known and key(r) not in jobs]


def admission_outcomes(
    requests: Sequence[TriggerRequest], rows: Sequence[AdmitRow], again: dict[int, Admission]
) -> list[Admission]:
    """Each request's outcome in request order, with the job's priority once that request was
    applied (`again`: the outcomes of the raced requests, admitted a second time)."""
    known = {(r.event_id, r.scope): r for r in rows if r.kind == "known"}
    jobs = {r.scope: r for r in rows if r.kind != "known"}  # pair -> the job it joined or created
    created_pairs = {r.scope for r in rows if r.kind == "created"}
    priority_now = {r.scope: r.priority for r in rows if r.kind == "joined"}
    applied: set[tuple[str, str]] = set()  # (event id, pair) whose trigger this batch has applied
    outcomes: list[Admission] = []
    for i, r in enumerate(requests):
        if i in again:
            outcomes.append(again[i])
            continue
        pair = key(r)
        if (r.event_id, pair) in known:
            seen = known[(r.event_id, pair)]
            outcomes.append(
                Admission(
                    request=r,
                    job_id=seen.id,
                    outcome=AdmissionOutcome.DUPLICATE,
                    priority=seen.priority,
                    attempts=seen.attempts,
                )
            )
            continue
        if (r.event_id, pair) in applied:
            outcome = AdmissionOutcome.DUPLICATE
        else:
            new_job = pair in created_pairs and pair not in priority_now
            outcome = AdmissionOutcome.CREATED if new_job else AdmissionOutcome.JOINED
            priority_now[pair] = max(priority_now.get(pair, r.priority), r.priority)
            applied.add((r.event_id, pair))
        job = jobs[pair]
        outcomes.append(
            Admission(request=r, job_id=job.id, outcome=outcome, priority=priority_now[pair], attempts=job.attempts)
        )
    return outcomes


ADMIT_PLAIN = Statement(ADMIT_SQL)


async def admit_on(
    conn: asyncpg.Connection, requests: Sequence[TriggerRequest], policy: AdmissionPolicy
) -> list[Admission]:
    """`JobQueue.admit` on a plain asyncpg connection, inside the caller's transaction."""
    if not requests:
        return []
    records = await conn.fetch(ADMIT_PLAIN.sql, *ADMIT_PLAIN.args(admission_params(requests, policy)))
    rows = [AdmitRow(**r) for r in records]
    raced = raced_requests(requests, rows)
    again = dict(zip(raced, await admit_on(conn, [requests[i] for i in raced], policy), strict=True)) if raced else {}
    return admission_outcomes(requests, rows, again)
