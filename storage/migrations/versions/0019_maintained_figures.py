"""/metrics reads maintained counters, not the job and attempt tables: whatever the history, a
scrape reads a few rows per model type.

- `job_type_counts` (model type, status, shard): jobs per model type and status, kept by
  statement-level triggers on training_jobs as `job_status_counts` is (migration 0010): each
  backend adds into its own shard, rows are upserted in key order, TRUNCATE empties it.
- `attempt_totals` (model type, status, shard): training attempts that ended, and their seconds,
  kept by a statement-level trigger on the insert of training_events (an attempt's row is written
  once, when it ends).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

SHARDS = 16
_JOBS = f"""
    INSERT INTO job_type_counts AS c (model_type, status, shard, jobs)
    SELECT model_type, status, pg_backend_pid() % {SHARDS}, sum(n) FROM ({{rows}}) AS d(model_type, status, n)
    GROUP BY model_type, status HAVING sum(n) <> 0 ORDER BY model_type, status
    ON CONFLICT (model_type, status, shard) DO UPDATE SET jobs = c.jobs + EXCLUDED.jobs;
"""
_CHANGES = {
    "insert": "SELECT model_type, status, 1 FROM new_jobs",
    "update": "SELECT model_type, status, 1 FROM new_jobs UNION ALL SELECT model_type, status, -1 FROM old_jobs",
    "delete": "SELECT model_type, status, -1 FROM old_jobs",
}
_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS new_jobs",
    "update": "REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs",
    "delete": "REFERENCING OLD TABLE AS old_jobs",
}


def upgrade() -> None:
    op.execute(
        "CREATE TABLE job_type_counts (model_type text NOT NULL, status text NOT NULL, shard smallint NOT NULL, "
        "jobs bigint DEFAULT 0 NOT NULL, CONSTRAINT pk_job_type_counts PRIMARY KEY (model_type, status, shard))"
    )
    op.execute(
        "CREATE TABLE attempt_totals (model_type text NOT NULL, status text NOT NULL, shard smallint NOT NULL, "
        "attempts bigint DEFAULT 0 NOT NULL, seconds double precision DEFAULT 0 NOT NULL, "
        "CONSTRAINT pk_attempt_totals PRIMARY KEY (model_type, status, shard))"
    )
    op.execute("LOCK TABLE training_jobs, training_events IN SHARE MODE")  # seeded without changes meanwhile
    op.execute("""
        INSERT INTO job_type_counts (model_type, status, shard, jobs)
        SELECT model_type, status, 0, count(*) FROM training_jobs GROUP BY model_type, status
    """)
    op.execute("""
        INSERT INTO attempt_totals (model_type, status, shard, attempts, seconds)
        SELECT model_type, status, 0, count(*), coalesce(sum(duration_seconds), 0)
        FROM training_events GROUP BY model_type, status
    """)
    for op_name, rows in _CHANGES.items():
        op.execute(f"""
            CREATE FUNCTION fcl_count_job_types_{op_name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {_JOBS.format(rows=rows)}
                RETURN NULL;
            END $$
        """)
        op.execute(f"""
            CREATE TRIGGER fcl_count_job_types_{op_name} AFTER {op_name.upper()} ON training_jobs
            {_REFERENCING[op_name]} FOR EACH STATEMENT EXECUTE FUNCTION fcl_count_job_types_{op_name}()
        """)
    op.execute("""
        CREATE FUNCTION fcl_count_job_types_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM job_type_counts;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER fcl_count_job_types_truncate AFTER TRUNCATE ON training_jobs
        FOR EACH STATEMENT EXECUTE FUNCTION fcl_count_job_types_truncate()
    """)
    op.execute(f"""
        CREATE FUNCTION fcl_total_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO attempt_totals AS t (model_type, status, shard, attempts, seconds)
            SELECT model_type, status, pg_backend_pid() % {SHARDS}, count(*), coalesce(sum(duration_seconds), 0)
            FROM new_events GROUP BY model_type, status ORDER BY model_type, status
            ON CONFLICT (model_type, status, shard)
            DO UPDATE SET attempts = t.attempts + EXCLUDED.attempts, seconds = t.seconds + EXCLUDED.seconds;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER fcl_total_attempts AFTER INSERT ON training_events
        REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION fcl_total_attempts()
    """)
    op.execute("""
        CREATE FUNCTION fcl_total_attempts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM attempt_totals;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER fcl_total_attempts_truncate AFTER TRUNCATE ON training_events
        FOR EACH STATEMENT EXECUTE FUNCTION fcl_total_attempts_truncate()
    """)


def downgrade() -> None:
    for op_name in (*_CHANGES, "truncate"):
        op.execute(f"DROP TRIGGER fcl_count_job_types_{op_name} ON training_jobs")
        op.execute(f"DROP FUNCTION fcl_count_job_types_{op_name}()")
    op.execute("DROP TRIGGER fcl_total_attempts ON training_events")
    op.execute("DROP FUNCTION fcl_total_attempts()")
    op.execute("DROP TRIGGER fcl_total_attempts_truncate ON training_events")
    op.execute("DROP FUNCTION fcl_total_attempts_truncate()")
    op.execute("DROP TABLE attempt_totals")
    op.execute("DROP TABLE job_type_counts")
