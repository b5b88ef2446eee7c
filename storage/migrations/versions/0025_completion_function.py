"""A job's completion in one round trip: `fcl_complete_job(jsonb)`.

A completion was eleven statements from Python, each a round trip with the driver's work between
them (about 6.6 ms of a 8.6 ms no-op claim-and-complete cycle). This function does the same writes
in the same order, inside the caller's transaction, from one JSON document that
`storage.queue.JobQueue.complete` builds:

1. the job, locked, only while the caller's lease holds it (else SQLSTATE FC001: the lease is lost);
2. the champion the candidate was validated against is still the champion (else FC002);
3. the next version number of the model type, under the advisory lock `next_version` takes;
4. the attempt's `training_events` row (an `abandoned` row of the same attempt is replaced; any
   other outcome already recorded is FC003);
5. the version, its checks, the samples it used taken off its dataset's counter;
6. the job completed, its `completed` and `training-validation` events in the outbox;
7. when the candidate passed its gate, the champion move under the champion lock (checked again
   there: FC002) with its `model-versions` event, after the job's events.

It returns the completed job row, the attempt's id, the version number, how many events it
queued, and whether the dataset's counter is still at its threshold with nothing waiting or
running (the caller then admits the next job, in the same transaction).
tests/integration/test_queue_completion.py holds it to the Python builders of each event.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

# storage.reads.ts: a timestamptz as pydantic writes a UTC datetime
_UTC = "({0} AT TIME ZONE 'UTC')"
_TS = (
    "to_char({utc}, CASE WHEN date_part('microseconds', {utc})::bigint % 1000000 = 0 "
    """THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)"""
)


def _ts(column: str) -> str:
    return _TS.format(utc=_UTC.format(column))


FUNCTION = """
CREATE FUNCTION fcl_complete_job(
    p jsonb,
    OUT job training_jobs, OUT attempt_id uuid, OUT new_version integer, OUT queued_events integer,
    OUT ready boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    j training_jobs;
    d datasets;
    a training_events;
    current_seq integer;
    current_version integer;
    moved_seq integer;
    used bigint;
    ledger champion_ledger;
    status_event_id uuid := gen_random_uuid();
BEGIN
    SELECT * INTO j FROM training_jobs t
    WHERE t.id = (p->>'job_id')::uuid AND t.lease_token = (p->>'token')::uuid AND t.status = 'in_progress'
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'FC001',
            MESSAGE = format('the lease of job %s is not held by %s', p->>'job_id', p->>'owner');
    END IF;

    SELECT l.seq, l.version INTO current_seq, current_version FROM champion_ledger l
    WHERE l.model_type = j.model_type ORDER BY l.seq DESC LIMIT 1;
    IF coalesce(current_seq, 0) <> (p->>'validated_against')::integer THEN
        RAISE EXCEPTION USING ERRCODE = 'FC002',
            MESSAGE = format('the %s champion moved while the candidate was validated', j.model_type);
    END IF;

    -- the second statement's snapshot is taken after the lock is held
    PERFORM pg_advisory_xact_lock(hashtext('model_versions:' || j.model_type));
    SELECT coalesce(max(v.version), 0) + 1 INTO new_version FROM model_versions v WHERE v.model_type = j.model_type;

    a := jsonb_populate_record(NULL::training_events, p->'attempt');
    INSERT INTO training_events AS e (
        id, job_id, attempt, dataset_id, model_type, status, worker, started_at, finished_at, duration_seconds,
        fit_seconds, sample_count, dataset_watermark, metrics, error_type, error_message, model_version,
        validation_passed, promoted, verdict, verdict_message, drift, reason)
    VALUES (
        gen_random_uuid(), j.id, j.attempts, j.dataset_id, j.model_type, 'completed', p->>'owner', a.started_at,
        now(), a.duration_seconds, a.fit_seconds, a.sample_count, a.dataset_watermark, a.metrics, NULL, NULL,
        new_version, a.validation_passed, a.promoted, a.verdict, a.verdict_message, a.drift, j.reason)
    ON CONFLICT (job_id, attempt) DO UPDATE
    SET status = EXCLUDED.status, worker = EXCLUDED.worker, started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at, duration_seconds = EXCLUDED.duration_seconds,
        fit_seconds = EXCLUDED.fit_seconds, sample_count = EXCLUDED.sample_count,
        dataset_watermark = EXCLUDED.dataset_watermark, metrics = EXCLUDED.metrics,
        error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
        model_version = EXCLUDED.model_version, validation_passed = EXCLUDED.validation_passed,
        promoted = EXCLUDED.promoted, verdict = EXCLUDED.verdict, verdict_message = EXCLUDED.verdict_message,
        drift = EXCLUDED.drift
    WHERE e.status = 'abandoned'
    RETURNING e.id INTO attempt_id;
    IF attempt_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'FC003',
            MESSAGE = format('attempt %s of job %s already has a recorded outcome', j.attempts, j.id);
    END IF;

    INSERT INTO model_versions (
        model_type, version, training_event_id, job_id, dataset_id, parent_version, artifact_path,
        artifact_sha256, artifact_size, artifact_format, metrics, hyperparameters, dataset_watermark, dataset_hash,
        seed, library_versions, code_version, info, profile)
    SELECT j.model_type, new_version, attempt_id, j.id, j.dataset_id, current_version, v.artifact_path,
           v.artifact_sha256, v.artifact_size, v.artifact_format, v.metrics, v.hyperparameters, v.dataset_watermark,
           v.dataset_hash, v.seed, v.library_versions, v.code_version, coalesce(v.info, '{}'), v.profile
    FROM jsonb_populate_record(NULL::model_versions, p->'version') AS v;

    INSERT INTO validation_results (
        training_event_id, position, model_type, candidate_version, baseline_version, kind, metric, value,
        baseline, threshold, direction, passed)
    SELECT attempt_id, c.ord - 1, j.model_type, new_version, current_version, r.kind, r.metric, r.value,
           r.baseline, r.threshold, r.direction, r.passed
    FROM jsonb_array_elements(p->'checks') WITH ORDINALITY AS c(check_, ord),
         LATERAL jsonb_populate_record(NULL::validation_results, c.check_) AS r
    ORDER BY c.ord;

    -- the samples it used and had not been used before come off the counter (never below zero)
    SELECT * INTO STRICT d FROM datasets s WHERE s.dataset_id = j.dataset_id FOR UPDATE;
    IF a.dataset_watermark > d.trained_watermark THEN
        SELECT count(*) INTO used FROM training_samples s
        WHERE s.dataset_id = j.dataset_id AND s.id > d.trained_watermark AND s.id <= a.dataset_watermark;
        UPDATE datasets s
        SET samples_since_training = greatest(s.samples_since_training - used, 0),
            trained_watermark = a.dataset_watermark, last_trained_at = now(), updated_at = now()
        WHERE s.dataset_id = j.dataset_id
        RETURNING * INTO d;
    END IF;

    UPDATE training_jobs AS t
    SET status = 'completed', model_version = new_version, progress = 1.0, finished_at = now(), updated_at = now(),
        lease_token = NULL, lease_expires_at = NULL
    WHERE t.id = j.id
    RETURNING * INTO j;
    job := j;

    -- storage.queue.events.status_event's `completed` event, then the validation event
    INSERT INTO outbox (event_id, topic, key, payload)
    VALUES (
        status_event_id, p->>'status_topic', j.id::text, jsonb_build_object(
            'event_id', status_event_id, 'job_id', j.id, 'dataset_id', j.dataset_id, 'model_type', j.model_type,
            'status', 'completed', 'priority', j.priority, 'attempt', GREATEST(1, j.attempts), 'progress', 1.0,
            'message', format('version %s %s', new_version, p->>'verdict'), 'error', NULL,
            'training_event_id', attempt_id, 'model_version', new_version,
            'occurred_at', {now}, 'reason', j.reason)),
        ((p->'validation'->>'event_id')::uuid, p->>'validation_topic', j.id::text,
         p->'validation' || jsonb_build_object(
            'training_event_id', attempt_id, 'model_type', j.model_type, 'candidate_version', new_version,
            'baseline_version', current_version));
    queued_events := 2;

    IF (p->>'promote')::boolean THEN
        -- ChampionRepository.move: serialised with other moves and the retention of this type
        PERFORM pg_advisory_xact_lock(hashtext('champion:' || j.model_type));
        SELECT l.seq INTO moved_seq FROM champion_ledger l
        WHERE l.model_type = j.model_type ORDER BY l.seq DESC LIMIT 1;
        IF moved_seq IS DISTINCT FROM current_seq THEN
            RAISE EXCEPTION USING ERRCODE = 'FC002',
                MESSAGE = format('the %s champion moved since it was read', j.model_type);
        END IF;
        INSERT INTO champion_ledger (model_type, seq, version, previous_version, reason, note, actor, event_id)
        VALUES (j.model_type, coalesce(current_seq, 0) + 1, new_version, current_version, 'validated', NULL,
                p->>'actor', gen_random_uuid())
        RETURNING * INTO ledger;
        INSERT INTO outbox (event_id, topic, key, payload)
        VALUES (ledger.event_id, p->>'versions_topic', j.model_type, jsonb_build_object(
            'event_id', ledger.event_id, 'model_type', j.model_type, 'version', new_version,
            'previous_version', current_version, 'reason', 'validated', 'occurred_at', {created}));
        queued_events := 3;
    END IF;

    -- JobQueue.admit_ready's condition for this dataset: samples came during the training
    ready := d.samples_since_training >= d.threshold AND NOT EXISTS (
        SELECT 1 FROM training_jobs t
        WHERE t.dataset_id = d.dataset_id AND t.model_type = d.model_type AND t.status IN ('queued', 'in_progress'));
END
$fn$
""".replace("{now}", _ts("clock_timestamp()")).replace("{created}", _ts("ledger.created_at"))


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION fcl_complete_job(jsonb)")
