"""Commits that change training history, model versions or champions NOTIFY `fcl_changed` with
the table's name, so API processes can cache those views and drop them the moment they change.

Statement-level triggers: one notification per table per statement, delivered at commit (and
PostgreSQL folds repeats within a transaction). The samples and queue tables are not watched.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WATCHED = ("training_events", "model_versions", "champion_ledger", "validation_results")


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION fcl_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('fcl_changed', TG_TABLE_NAME);
            RETURN NULL;
        END $$""")
    for table in WATCHED:
        op.execute(f"""CREATE TRIGGER fcl_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                       FOR EACH STATEMENT EXECUTE FUNCTION fcl_notify_change()""")


def downgrade() -> None:
    for table in WATCHED:
        op.execute(f"DROP TRIGGER fcl_notify_change ON {table}")
    op.execute("DROP FUNCTION fcl_notify_change()")
