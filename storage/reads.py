"""The API's read views as ONE SQL statement each, with the JSON document built by PostgreSQL.

`training-status`, the history and the model versions are what dashboards poll. Each is a single
statement on a plain asyncpg pool (no explicit transaction: one statement reads one snapshot), and
the handler sends the text PostgreSQL returns as it is: no ORM rows, no domain objects, no pydantic
on the way out. The documents have exactly the fields and formats of the views in `web.schemas`
(timestamps as pydantic writes them, `...Z` with microseconds only when there are any);
`tests/integration/test_reads.py` checks each against the view built from the repositories.

The queue's figures come from `job_status_counts` (migration 0010), not from counting every job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fcl.contract import model_types
from fcl.contract.enums import JobStatus
from fcl.storage.db import Database


def ts(column: str) -> str:
    """A timestamptz as pydantic writes a UTC datetime: `2026-01-01T00:00:00Z`, or with `.ffffff`
    when it has microseconds; null stays null."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, CASE WHEN date_part('microseconds', {utc})::bigint % 1000000 = 0 "
        """THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)"""
    )


# How many of a job's trigger ids its reads carry from each end (first and last), so that a job
# joined by 200k triggers reads as small as one joined by 40; `trigger_count` counts them all.
TRIGGER_IDS_SHOWN = 20


def trigger_ids(j: str = "j") -> str:
    """The first and last TRIGGER_IDS_SHOWN trigger ids of the training_jobs row `j`, in the order
    they arrived: two index scans of ix_job_triggers_job_order, whatever the job's count."""
    n = TRIGGER_IDS_SHOWN
    return f"""ARRAY(SELECT x.event_id FROM (
        (SELECT t.event_id, t.received_at FROM job_triggers t WHERE t.job_id = {j}.id
         ORDER BY t.received_at, t.event_id LIMIT {n})
        UNION
        (SELECT t.event_id, t.received_at FROM job_triggers t WHERE t.job_id = {j}.id
         ORDER BY t.received_at DESC, t.event_id DESC LIMIT {n})) x ORDER BY x.received_at, x.event_id)"""


def _error(alias: str) -> str:
    return (
        f"CASE WHEN {alias}.error_type IS NOT NULL THEN json_build_object('type', {alias}.error_type, "
        f"'message', coalesce({alias}.error_message, '')) END"
    )


def job_json(j: str = "j") -> str:
    """web.schemas.JobView of the training_jobs row `j`."""
    return f"""json_build_object(
        'job_id', {j}.id, 'dataset_id', {j}.dataset_id, 'model_type', {j}.model_type, 'status', {j}.status,
        'priority', {j}.priority, 'attempts', {j}.attempts, 'max_attempts', {j}.max_attempts,
        'progress', {j}.progress, 'cancel_requested', {j}.cancel_requested,
        'worker', CASE WHEN {j}.status = 'in_progress' THEN {j}.lease_owner END,
        'error', {_error(j)}, 'model_version', {j}.model_version,
        'trigger_event_ids', {trigger_ids(j)}, 'trigger_count', {j}.trigger_count,
        'created_at', {ts(j + ".created_at")}, 'updated_at', {ts(j + ".updated_at")},
        'run_after', {ts(j + ".run_after")}, 'started_at', {ts(j + ".started_at")},
        'finished_at', {ts(j + ".finished_at")}, 'reason', {j}.reason)"""


def event_json(e: str = "e") -> str:
    """web.schemas.TrainingEventView of the training_events row `e`."""
    return f"""json_build_object(
        'training_event_id', {e}.id, 'job_id', {e}.job_id, 'attempt', {e}.attempt, 'dataset_id', {e}.dataset_id,
        'model_type', {e}.model_type, 'status', {e}.status, 'worker', {e}.worker,
        'started_at', {ts(e + ".started_at")}, 'finished_at', {ts(e + ".finished_at")},
        'duration_seconds', {e}.duration_seconds, 'fit_seconds', {e}.fit_seconds, 'sample_count', {e}.sample_count,
        'dataset_watermark', {e}.dataset_watermark, 'metrics', {e}.metrics, 'error', {_error(e)},
        'model_version', {e}.model_version, 'validation_passed', {e}.validation_passed, 'promoted', {e}.promoted,
        'verdict', {e}.verdict, 'verdict_message', {e}.verdict_message, 'reason', {e}.reason)"""


def _version_json(v: str, champion: str) -> str:
    """web.schemas.ModelVersionView of the model_versions row `v`; `champion` is its type's champion."""
    return f"""json_build_object(
        'model_type', {v}.model_type, 'version', {v}.version,
        'is_champion', {v}.version IS NOT DISTINCT FROM {champion},
        'parent_version', {v}.parent_version, 'training_event_id', {v}.training_event_id, 'job_id', {v}.job_id,
        'dataset_id', {v}.dataset_id,
        'artifact', json_build_object('path', {v}.artifact_path, 'sha256', {v}.artifact_sha256,
                                      'size', {v}.artifact_size, 'format', {v}.artifact_format),
        'metrics', {v}.metrics, 'hyperparameters', {v}.hyperparameters, 'dataset_watermark', {v}.dataset_watermark,
        'dataset_hash', {v}.dataset_hash, 'seed', {v}.seed, 'library_versions', {v}.library_versions,
        'code_version', {v}.code_version, 'info', {v}.info, 'created_at', {ts(v + ".created_at")},
        'deleted_at', {ts(v + ".deleted_at")})"""


def _move_json(m: str) -> str:
    """web.schemas.ChampionMoveView of the champion_ledger row `m`."""
    return f"""json_build_object(
        'model_type', {m}.model_type, 'version', {m}.version, 'previous_version', {m}.previous_version,
        'reason', {m}.reason, 'note', {m}.note, 'actor', {m}.actor, 'event_id', {m}.event_id,
        'occurred_at', {ts(m + ".created_at")})"""


# The model types' names, key metrics and directions ($1-$3), the seconds a worker counts as seen ($4).
TRAINING_STATUS_SQL = f"""
    SELECT json_build_object(
        'queue', (SELECT json_object_agg(s.status, coalesce(c.jobs, 0) ORDER BY s.ord)
                  FROM unnest(CAST($5 AS text[])) WITH ORDINALITY AS s(status, ord)
                  LEFT JOIN (SELECT status, sum(jobs) AS jobs FROM job_status_counts GROUP BY status) AS c
                         ON c.status = s.status),
        'waiting', coalesce((SELECT json_agg({job_json()} ORDER BY j.rank_at, j.id)
                             FROM (SELECT * FROM training_jobs WHERE status = 'queued'
                                   ORDER BY rank_at, id LIMIT 20) AS j), '[]'),
        'running', coalesce((SELECT json_agg({job_json()} ORDER BY j.started_at, j.id)
                             FROM training_jobs j WHERE j.status = 'in_progress'), '[]'),
        'workers', coalesce((SELECT json_agg(json_build_object(
                                 'worker_id', w.worker_id, 'hostname', w.hostname, 'pid', w.pid,
                                 'started_at', {ts("w.started_at")}, 'last_seen_at', {ts("w.last_seen_at")},
                                 'running_jobs', ARRAY(SELECT jsonb_array_elements_text(
                                     CASE WHEN jsonb_typeof(w.info -> 'running_jobs') = 'array'
                                          THEN w.info -> 'running_jobs' ELSE '[]' END)))
                             ORDER BY w.worker_id)
                             FROM worker_heartbeats w
                             WHERE w.last_seen_at > now() - make_interval(secs => $4)), '[]'),
        'model_types', (SELECT json_object_agg(t.name, json_build_object(
                            'champion_version', c.version, 'champion_since', {ts("c.created_at")},
                            'key_metric', t.key_metric, 'higher_is_better', t.higher_is_better,
                            'last_run', CASE WHEN e.id IS NOT NULL THEN {event_json()} END) ORDER BY t.ord)
                        FROM unnest(CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS boolean[]))
                             WITH ORDINALITY AS t(name, key_metric, higher_is_better, ord)
                        LEFT JOIN LATERAL (SELECT * FROM champion_ledger l WHERE l.model_type = t.name
                                           ORDER BY l.seq DESC LIMIT 1) AS c ON true
                        LEFT JOIN LATERAL (SELECT * FROM training_events x WHERE x.model_type = t.name
                                           ORDER BY x.started_at DESC, x.id DESC LIMIT 1) AS e ON true),
        'generated_at', {ts("clock_timestamp()")})::text
"""


def _history_sql(*, model_type: bool, status: bool, before: bool) -> str:
    """One page, newest first; $1 the limit + 1, then the filters given, in this order."""
    where, n = [], 2
    for given, clause in (
        (model_type, "model_type = ${}"),
        (status, "status = ${}"),
        (before, "(started_at, id) < (${}, ${})"),
    ):
        if given:
            args = clause.count("{}")
            where.append(clause.format(*range(n, n + args)))
            n += args
    return f"""
        WITH page AS (
            SELECT *, row_number() OVER (ORDER BY started_at DESC, id DESC) AS n FROM (
                SELECT * FROM training_events {"WHERE " + " AND ".join(where) if where else ""}
                ORDER BY started_at DESC, id DESC LIMIT $1) AS p)
        SELECT coalesce((SELECT json_agg({event_json()} ORDER BY e.n) FROM page e WHERE e.n < $1), '[]')::text
                   AS items,
               (SELECT count(*) FROM page) >= $1 AS more,
               (SELECT started_at FROM page WHERE n = $1 - 1) AS last_started_at,
               (SELECT id FROM page WHERE n = $1 - 1) AS last_id
    """


_HISTORY = {
    (m, s, b): _history_sql(model_type=m, status=s, before=b)
    for m in (False, True)
    for s in (False, True)
    for b in (False, True)
}

# A page of the versions of the model types in $1, newest first (created_at, model_type, version
# descending), after the cursor ($3-$5, all null for the first page), only version $2 when given;
# $6 the page size + 1. Each type's champion. A page of the ledger of those types, newest first,
# after its own cursor ($7, $8), of the same size.
MODEL_VERSIONS_SQL = f"""
    WITH types AS (SELECT name, ord FROM unnest(CAST($1 AS text[])) WITH ORDINALITY AS t(name, ord)),
    champions AS (
        SELECT t.name, t.ord, c.version FROM types t
        LEFT JOIN LATERAL (SELECT version FROM champion_ledger l WHERE l.model_type = t.name
                           ORDER BY l.seq DESC LIMIT 1) AS c ON true),
    page AS (
        SELECT v.*, c.version AS champion_version,
               row_number() OVER (ORDER BY v.created_at DESC, v.model_type DESC, v.version DESC) AS n
        FROM model_versions v JOIN champions c ON c.name = v.model_type
        WHERE (CAST($2 AS integer) IS NULL OR v.version = $2)
          AND (CAST($3 AS timestamptz) IS NULL
               OR (v.created_at, v.model_type, v.version)
                  < (CAST($3 AS timestamptz), CAST($4 AS text), CAST($5 AS integer)))
        ORDER BY v.created_at DESC, v.model_type DESC, v.version DESC LIMIT $6),
    moves AS (
        SELECT m.*, row_number() OVER (ORDER BY m.created_at DESC, m.id DESC) AS n FROM (
            SELECT * FROM champion_ledger WHERE model_type = ANY(CAST($1 AS text[]))
              AND (CAST($7 AS timestamptz) IS NULL OR (created_at, id) < (CAST($7 AS timestamptz), CAST($8 AS bigint)))
            ORDER BY created_at DESC, id DESC LIMIT $6) AS m)
    SELECT json_build_object(
        'champions', (SELECT json_object_agg(name, version ORDER BY ord) FROM champions),
        'versions', coalesce((SELECT json_agg({_version_json("v", "v.champion_version")} ORDER BY v.n)
                              FROM page v WHERE v.n < $6), '[]'),
        'ledger', coalesce((SELECT json_agg({_move_json("m")} ORDER BY m.n) FROM moves m WHERE m.n < $6), '[]')
    )::text AS body,
    (SELECT json_build_array(created_at, model_type, version) FROM page WHERE n = $6 - 1
       AND (SELECT count(*) FROM page) >= $6)::text AS next_versions,
    (SELECT json_build_array(created_at, id) FROM moves WHERE n = $6 - 1
       AND (SELECT count(*) FROM moves) >= $6)::text AS next_ledger
"""


@dataclass(frozen=True)
class VersionsPage:
    body: str  # a JSON object: champions, versions, ledger
    next_versions: tuple[datetime, str, int] | None  # the cursor after the last version, when more follow
    next_ledger: tuple[datetime, int] | None  # the cursor after the last ledger move, when more follow


@dataclass(frozen=True)
class HistoryPage:
    items: str  # a JSON array of TrainingEventView
    last: tuple[datetime, uuid.UUID] | None  # (started_at, id) of the last item when more follow


class ReadViews:
    """The read views, as plain asyncpg statements on connections of the process's one pool."""

    def __init__(self, db: Database) -> None:
        self.db = db
        specs = model_types.specs()
        self._types = (
            [s.name for s in specs],
            [s.key_metric for s in specs],
            [s.higher_is_better for s in specs],
        )

    async def _fetch(self, sql: str, *args: object) -> Any:
        row = await self.db.fetchrow(sql, *args)
        assert row is not None  # every statement here returns one row
        return row

    async def training_status(self, *, workers_seen_seconds: float) -> str:
        names, metrics, directions = self._types
        row = await self._fetch(
            TRAINING_STATUS_SQL, names, metrics, directions, workers_seen_seconds, [s.value for s in JobStatus]
        )
        return str(row[0])

    async def history(
        self,
        *,
        limit: int,
        model_type: str | None = None,
        status: str | None = None,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> HistoryPage:
        args: list[object] = [limit + 1]
        args += [a for a in (model_type, status) if a is not None]
        if before is not None:
            args += list(before)
        row = await self._fetch(_HISTORY[(model_type is not None, status is not None, before is not None)], *args)
        last = (row["last_started_at"], row["last_id"]) if row["more"] else None
        return HistoryPage(items=row["items"], last=last)

    async def model_versions(
        self,
        model_type: str | None,
        *,
        limit: int = 50,
        version: int | None = None,
        after: tuple[datetime, str, int] | None = None,
        ledger_after: tuple[datetime, int] | None = None,
    ) -> VersionsPage:
        types: Sequence[str] = [model_type] if model_type else list(model_types.names())
        row = await self._fetch(
            MODEL_VERSIONS_SQL,
            list(types),
            version,
            *(after or (None, None, None)),
            limit + 1,
            *(ledger_after or (None, None)),
        )

        def cursor(text: str | None) -> Any:
            if text is None:
                return None
            first, *rest = json.loads(text)
            return (datetime.fromisoformat(first), *rest)

        return VersionsPage(
            body=str(row["body"]), next_versions=cursor(row["next_versions"]), next_ledger=cursor(row["next_ledger"])
        )
