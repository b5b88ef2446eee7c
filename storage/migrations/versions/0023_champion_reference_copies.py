"""A champion carries its own reference set: `reference_samples` holds, per champion (`type:version`,
one LIST partition each), a copy of the samples it was judged on, made by the sample retention
before it drops a day that only a champion's reference set still reads. The retention then never
keeps whole days (every dataset's rows) for a champion that stays, and a copy goes whole (its
partition dropped) once its version is no longer champion.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE reference_samples (
            champion text NOT NULL,
            id bigint NOT NULL,
            payload jsonb NOT NULL,
            CONSTRAINT pk_reference_samples PRIMARY KEY (champion, id)
        ) PARTITION BY LIST (champion)
    """)


def downgrade() -> None:
    op.execute("DROP TABLE reference_samples")
