"""Jobs per status as a maintained summary (`job_status_counts`), so reading the queue's figures costs
at most 16 rows per status however many jobs were ever made; indexes for the history's status
filters, and for the claim's probe of a dataset's running jobs.

Statement-level AFTER triggers with transition tables add each statement's net change per status; a
statement that changes no status (heartbeats, progress, a trigger joining a waiting job) writes
nothing and takes no lock. Each backend adds into its own shard of each status (pid mod 16), so
concurrent writers rarely wait on one another; a reader sums the shards. Rows are upserted in
status order, so two transactions cannot deadlock on them. TRUNCATE empties the summary. The same
triggers NOTIFY `fcl_queued` when a statement queues a job, which wakes the trainer workers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_STATUSES = "ARRAY['queued', 'in_progress', 'completed', 'failed', 'cancelled']"

# The net change per status of one statement, from its transition tables, applied in status order.
# Each backend adds into its own shard (its pid mod SHARDS) of each status: concurrent
# transactions (admissions, claims, completions) rarely wait on one another's counter rows.
SHARDS = 16
_APPLY = f"""
    INSERT INTO job_status_counts AS c (status, shard, jobs)
    SELECT status, pg_backend_pid() % {SHARDS}, sum(n) FROM ({{rows}}) AS d(status, n)
    GROUP BY status HAVING sum(n) <> 0 ORDER BY status
    ON CONFLICT (status, shard) DO UPDATE SET jobs = c.jobs + EXCLUDED.jobs;
"""
_CHANGES = {
    "insert": "SELECT status, 1 FROM new_jobs",
    "update": "SELECT status, 1 FROM new_jobs UNION ALL SELECT status, -1 FROM old_jobs",
    "delete": "SELECT status, -1 FROM old_jobs",
}
# Trainer workers LISTEN on fcl_queued and claim at once instead of waiting for their next poll:
# a job was queued (admitted, or back in the queue by a retry, release or lease expiry).
_WAKE = {
    "insert": "EXISTS (SELECT 1 FROM new_jobs WHERE status = 'queued')",
    "update": "EXISTS (SELECT 1 FROM new_jobs n JOIN old_jobs o ON o.id = n.id "
    "WHERE n.status = 'queued' AND o.status <> 'queued')",
}
_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS new_jobs",
    "update": "REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs",
    "delete": "REFERENCING OLD TABLE AS old_jobs",
}


def upgrade() -> None:
    op.create_index(
        "ix_training_jobs_running_pair",
        "training_jobs",
        ["dataset_id", "model_type"],
        postgresql_where="status = 'in_progress'",
    )
    op.create_index(op.f("ix_training_events_status_started_at_id"), "training_events", ["status", "started_at", "id"])
    op.create_index(
        op.f("ix_training_events_model_type_status_started_at_id"),
        "training_events",
        ["model_type", "status", "started_at", "id"],
    )
    op.execute(
        "CREATE TABLE job_status_counts (status text NOT NULL, shard smallint NOT NULL, "
        "jobs bigint DEFAULT 0 NOT NULL, CONSTRAINT pk_job_status_counts PRIMARY KEY (status, shard))"
    )
    op.execute("LOCK TABLE training_jobs IN SHARE MODE")  # no status changes while the summary is seeded
    op.execute(f"""
        INSERT INTO job_status_counts (status, shard, jobs)
        SELECT s, 0, (SELECT count(*) FROM training_jobs WHERE status = s) FROM unnest({_STATUSES}) AS s
    """)
    for op_name, rows in _CHANGES.items():
        op.execute(f"""
            CREATE FUNCTION fcl_count_jobs_{op_name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {_APPLY.format(rows=rows)}
                {f"IF {_WAKE[op_name]} THEN PERFORM pg_notify('fcl_queued', ''); END IF;" if op_name in _WAKE else ""}
                RETURN NULL;
            END $$
        """)
        op.execute(f"""
            CREATE TRIGGER fcl_count_jobs_{op_name} AFTER {op_name.upper()} ON training_jobs
            {_REFERENCING[op_name]} FOR EACH STATEMENT EXECUTE FUNCTION fcl_count_jobs_{op_name}()
        """)
    op.execute("""
        CREATE FUNCTION fcl_count_jobs_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM job_status_counts;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER fcl_count_jobs_truncate AFTER TRUNCATE ON training_jobs
        FOR EACH STATEMENT EXECUTE FUNCTION fcl_count_jobs_truncate()
    """)


def downgrade() -> None:
    for op_name in (*_CHANGES, "truncate"):
        op.execute(f"DROP TRIGGER fcl_count_jobs_{op_name} ON training_jobs")
        op.execute(f"DROP FUNCTION fcl_count_jobs_{op_name}()")
    op.execute("DROP TABLE job_status_counts")
    op.drop_index(op.f("ix_training_events_model_type_status_started_at_id"), table_name="training_events")
    op.drop_index(op.f("ix_training_events_status_started_at_id"), table_name="training_events")
    op.drop_index("ix_training_jobs_running_pair", table_name="training_jobs")
