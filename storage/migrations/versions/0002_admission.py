"""Job admission as one database function: idempotent on the trigger's event id, joins the
waiting job of the same dataset and model type (raising its priority), else queues a new one
(the follow-up when one runs). One call per trigger, many triggers per statement.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ADMIT = """
CREATE OR REPLACE FUNCTION fcl_admit_trigger(
    p_event_id text, p_dataset_id text, p_model_type text, p_priority smallint,
    p_max_attempts integer, p_ageing interval, p_source text)
RETURNS TABLE (admitted_job uuid, outcome text, job_priority smallint, job_attempts integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_key text := p_dataset_id || '/' || p_model_type;
    v_job uuid;
    v_priority smallint;
    v_attempts integer;
BEGIN
    SELECT t.job_id INTO v_job FROM job_triggers t WHERE t.event_id = p_event_id;
    IF FOUND THEN
        SELECT j.priority, j.attempts INTO v_priority, v_attempts FROM training_jobs j WHERE j.id = v_job;
        RETURN QUERY SELECT v_job, 'duplicate'::text, v_priority, v_attempts;
        RETURN;
    END IF;
    LOOP
        UPDATE training_jobs j
           SET priority = GREATEST(j.priority, p_priority),
               rank_at = LEAST(j.rank_at, j.created_at - p_priority * p_ageing),
               updated_at = now()
         WHERE j.dedupe_key = v_key AND j.status = 'queued'
        RETURNING j.id, j.priority, j.attempts INTO v_job, v_priority, v_attempts;
        IF FOUND THEN
            INSERT INTO job_triggers (event_id, job_id, priority, source, received_at)
            VALUES (p_event_id, v_job, p_priority, p_source, clock_timestamp());
            RETURN QUERY SELECT v_job, 'joined'::text, v_priority, v_attempts;
            RETURN;
        END IF;
        INSERT INTO training_jobs (id, dataset_id, model_type, priority, max_attempts, rank_at, dedupe_key)
        VALUES (gen_random_uuid(), p_dataset_id, p_model_type, p_priority, p_max_attempts,
                now() - p_priority * p_ageing, v_key)
        ON CONFLICT (dedupe_key) WHERE status = 'queued' DO NOTHING
        RETURNING id, priority, attempts INTO v_job, v_priority, v_attempts;
        IF FOUND THEN
            INSERT INTO job_triggers (event_id, job_id, priority, source, received_at)
            VALUES (p_event_id, v_job, p_priority, p_source, clock_timestamp());
            RETURN QUERY SELECT v_job, 'created'::text, v_priority, v_attempts;
            RETURN;
        END IF;
        -- Another transaction queued one for this pair first: go round and join it.
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.execute(ADMIT)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS fcl_admit_trigger(text, text, text, smallint, integer, interval, text)")
