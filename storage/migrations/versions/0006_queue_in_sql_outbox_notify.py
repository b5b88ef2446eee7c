"""The job lifecycle leaves PL/pgSQL, and the outbox wakes its relays.

- Admission is storage.queue's set-based SQL now: the `fcl_admit_trigger` function (0002, 0003)
  goes.
- Every insert into `outbox` NOTIFYs `fcl_outbox` (a statement-level trigger: one notification
  per statement, delivered at commit), so any process's relay publishes at once what any other
  process committed, without being called.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ADMIT_SIGNATURE = "fcl_admit_trigger(text, text, text, smallint, integer, interval, text)"


def upgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {ADMIT_SIGNATURE}")
    op.execute("""
        CREATE FUNCTION fcl_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('fcl_outbox', '');
            RETURN NULL;
        END $$""")
    op.execute("""CREATE TRIGGER fcl_notify_outbox AFTER INSERT ON outbox
                  FOR EACH STATEMENT EXECUTE FUNCTION fcl_notify_outbox()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER fcl_notify_outbox ON outbox")
    op.execute("DROP FUNCTION fcl_notify_outbox()")
    spec = importlib.util.spec_from_file_location("fcl_migration_0002", Path(__file__).with_name("0002_admission.py"))
    assert spec is not None and spec.loader is not None
    admission = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(admission)
    op.execute(admission.ADMIT)
    op.execute(f"ALTER FUNCTION {ADMIT_SIGNATURE} SET plan_cache_mode = force_custom_plan")
