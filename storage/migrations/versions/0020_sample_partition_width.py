"""The width of a partition of training_samples is a setting (FCL_SAMPLE_PARTITION_SECONDS, a day
by default), so that an accelerated run (bench/soak.py --profile months) lives through months of
retention in hours; the retention finds old partitions by their bounds, not by their names.

`fcl_ensure_sample_partitions_every(first, width_seconds, count)` creates the `count` partitions
of `width_seconds` from the one holding `first` that are missing, aligned on multiples of the
width since the epoch. A day's width keeps the daily partitions and their names
(`training_samples_pYYYYMMDD`, migration 0018); another width names each by its start
(`training_samples_pYYYYMMDD_HH24MISS`, UTC). A partition that would overlap one already there
(the width was changed) or hold rows of the default partition is not made: those rows stay where
they are, and an insert never fails.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

ENSURE_EVERY = """
CREATE OR REPLACE FUNCTION fcl_ensure_sample_partitions_every(first timestamptz, width_seconds integer, count integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    start timestamptz;
    name text;
    made integer := 0;
BEGIN
    IF width_seconds = 86400 THEN
        RETURN fcl_ensure_sample_partitions(first::date, count);
    END IF;
    FOR i IN 0 .. count - 1 LOOP
        start := to_timestamp((floor(extract(epoch FROM first) / width_seconds) + i) * width_seconds);
        name := format('training_samples_p%s', to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS'));
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF training_samples FOR VALUES FROM (%L) TO (%L)',
                               name, start, start + make_interval(secs => width_seconds));
                made := made + 1;
            EXCEPTION WHEN check_violation OR invalid_object_definition THEN
                -- rows of that span are in the default partition, or another width's partition
                -- covers part of it: those rows stay where they are
                NULL;
            END;
        END IF;
    END LOOP;
    RETURN made;
END $$
"""


def upgrade() -> None:
    op.execute(ENSURE_EVERY)


def downgrade() -> None:
    op.execute("DROP FUNCTION fcl_ensure_sample_partitions_every(timestamptz, integer, integer)")
