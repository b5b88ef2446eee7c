"""The queue's two set-based statements, each one reviewable piece of SQL: admitting a batch of
triggers (`ADMIT_SQL`) and claiming the best waiting job (`CLAIM_SQL`), both with their status
events. The smaller statements of each transition stay beside it in `storage.queue.transitions`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from fcl.contract.topics import Topic
from fcl.storage.queue.events import status_event_sql
from fcl.storage.reads import trigger_ids

# A job row with its triggering event ids, in the order they arrived.
JOB = f"j.*, {trigger_ids('j')} AS trigger_event_ids"


# The best waiting job: an index scan of ix_training_jobs_claim (tested with EXPLAIN). A follow-up
# waits while its dataset still trains.
CLAIM_CANDIDATE_SQL = """
    SELECT id FROM training_jobs
    WHERE status = 'queued' AND run_after <= now() AND NOT (model_type = ANY(CAST(:excluded AS text[])))
      AND NOT EXISTS (SELECT 1 FROM training_jobs r WHERE r.dataset_id = training_jobs.dataset_id
                      AND r.model_type = training_jobs.model_type AND r.status = 'in_progress')
    ORDER BY rank_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""


# Admission of a batch of triggers in one statement: the event ids seen before for the same pair
# (`known`: an id is scoped by its dataset and model type, migration 0014); the first of each new
# (event id, pair) (`fresh`); per dataset and model type the highest priority asked (`pairs`);
# the job waiting for a pair joined (`joined`: priority raised, rank moved up) or a new one queued
# (`created`; a follow-up when one runs) with its `queued` status event, built here as
# `status_event` builds it (tested equal); and each fresh trigger recorded against its job. A pair
# whose insert conflicts (another transaction queued it meanwhile) gets neither: the caller admits
# its triggers again. Waiting jobs are locked in id order, so concurrent batches cannot deadlock.
# A new job keeps the trace context of the first trigger of its pair that has one.
ADMIT_SQL = """
    WITH req AS (
        SELECT * FROM unnest(CAST(:events AS text[]), CAST(:datasets AS text[]), CAST(:types AS text[]),
                             CAST(:priorities AS smallint[]), CAST(:sources AS text[]), CAST(:attempts AS integer[]),
                             CAST(:traces AS text[]), CAST(:reasons AS jsonb[]))
               WITH ORDINALITY AS r(event_id, dataset_id, model_type, priority, source, max_attempts, trace, reason,
                                    ord)),
    known AS (
        SELECT DISTINCT t.scope, t.event_id, j.id, j.priority, j.attempts
        FROM req r JOIN job_triggers t ON t.scope = r.dataset_id || '/' || r.model_type AND t.event_id = r.event_id
        JOIN training_jobs j ON j.id = t.job_id),
    fresh AS (
        SELECT DISTINCT ON (r.event_id, r.dataset_id || '/' || r.model_type)
               r.*, r.dataset_id || '/' || r.model_type AS key FROM req r
        WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.event_id = r.event_id
                          AND k.scope = r.dataset_id || '/' || r.model_type)
        ORDER BY r.event_id, r.dataset_id || '/' || r.model_type, r.ord),
    pairs AS (
        SELECT key, min(dataset_id) AS dataset_id, min(model_type) AS model_type, max(priority) AS priority,
               min(max_attempts) AS max_attempts, count(*) AS n,
               (array_agg(trace ORDER BY ord) FILTER (WHERE trace IS NOT NULL))[1] AS trace,
               (array_agg(reason ORDER BY ord) FILTER (WHERE reason IS NOT NULL))[1] AS reason
        FROM fresh GROUP BY key),
    waiting AS (
        SELECT j.id, j.priority, j.dedupe_key FROM training_jobs j
        WHERE j.dedupe_key IN (SELECT key FROM pairs) AND j.status = 'queued'
        ORDER BY j.id FOR UPDATE),
    joined AS (
        UPDATE training_jobs AS j
        SET priority = GREATEST(j.priority, p.priority), trigger_count = j.trigger_count + p.n,
            rank_at = LEAST(j.rank_at, j.created_at - p.priority * CAST(:ageing AS interval)), updated_at = now()
        FROM waiting w JOIN pairs p ON p.key = w.dedupe_key
        WHERE j.id = w.id
        RETURNING j.dedupe_key, j.id, w.priority AS before, j.attempts),
    created AS (
        INSERT INTO training_jobs AS j (id, dataset_id, model_type, priority, max_attempts, rank_at, dedupe_key,
                                        trace_context, trigger_count, reason)
        SELECT gen_random_uuid(), p.dataset_id, p.model_type, p.priority, p.max_attempts,
               now() - p.priority * CAST(:ageing AS interval), p.key, p.trace, p.n, p.reason
        FROM pairs p WHERE NOT EXISTS (SELECT 1 FROM waiting w WHERE w.dedupe_key = p.key)
        ON CONFLICT (dedupe_key) WHERE status = 'queued' DO NOTHING
        RETURNING j.dedupe_key, j.id, j.priority, j.attempts, j.dataset_id, j.model_type, j.reason),
    jobs AS (SELECT dedupe_key, id FROM joined UNION ALL SELECT dedupe_key, id FROM created),
    triggers AS (
        INSERT INTO job_triggers (scope, event_id, job_id, priority, source, received_at, reason)
        SELECT f.key, f.event_id, jobs.id, f.priority, f.source, clock_timestamp(), f.reason
        FROM fresh f JOIN jobs ON jobs.dedupe_key = f.key
        ORDER BY f.ord
        RETURNING event_id),
    queued_events AS ({queued_events})
    SELECT 'known' AS kind, scope, event_id, id, priority, attempts FROM known
    UNION ALL SELECT 'joined', dedupe_key, NULL, id, before, attempts FROM joined
    UNION ALL SELECT 'created', dedupe_key, NULL, id, priority, attempts FROM created
""".replace(
    "{queued_events}",
    status_event_sql("created", status="'queued'", attempt="c.attempts + 1", progress="NULL", message="'queued'"),
)


# A claim in one statement: the best waiting job leased to `:worker`, with its `in_progress` event.
CLAIM_SQL = f"""
    WITH next AS ({CLAIM_CANDIDATE_SQL}),
    claimed AS (
        UPDATE training_jobs AS j
        SET status = 'in_progress', attempts = j.attempts + 1, lease_owner = :worker,
            lease_token = :token, lease_expires_at = now() + :lease, started_at = now(),
            updated_at = now(), progress = 0
        FROM next WHERE j.id = next.id
        RETURNING j.*),
    claimed_event AS ({
    status_event_sql(
        "claimed", status="'in_progress'", attempt="c.attempts", progress="0.0", message="CAST(:message AS text)"
    )
})
    SELECT {JOB} FROM claimed j
"""


def claim_params(worker: str, lease: timedelta, excluded: Sequence[str] = ()) -> dict[str, Any]:
    """CLAIM_SQL's parameters: a new lease token for `worker`, model types in `excluded` skipped."""
    return {
        "worker": worker,
        "token": uuid.uuid4(),
        "lease": lease,
        "excluded": list(excluded),
        "message": f"claimed by {worker}",
        "status_topic": Topic.TRAINING_STATUS.value,
    }
