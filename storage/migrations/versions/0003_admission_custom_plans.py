"""Admission plans each statement for its own arguments.

PL/pgSQL caches a statement's plan per connection and, after five calls, may switch to a generic
plan made while the tables were small (a sequential scan of job_triggers looks cheapest on a new
database). That plan stays for the life of the connection and each admission then costs time in
proportion to the table: measured with bench/bench_streams.py, batches of 500 triggers went from
65 ms to over 2 s as 20,000 jobs accumulated. With custom plans the index is always used.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SIGNATURE = "fcl_admit_trigger(text, text, text, smallint, integer, interval, text)"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_custom_plan")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode")
