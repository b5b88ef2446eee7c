"""Every dead-lettered input is kept whole (up to FCL_MAX_EVENT_BYTES) so that it can be replayed
through the same door once its cause is fixed; the dead-letter topic keeps its bounded letters.

`dead_letters` holds the raw key and value as they arrived, where they came from (topic,
partition, offset), the reason, and when it was last replayed. Its `letter_id` is the dead-letter
event's id (derived from topic, partition and offset), so a redelivered refused record is kept
once. Rows older than FCL_DEAD_LETTER_RETENTION_DAYS are deleted by the trainers' retention.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("letter_id", sa.Uuid(), nullable=False),
        sa.Column("source_topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", postgresql.BYTEA(), nullable=True),
        sa.Column("value", postgresql.BYTEA(), nullable=True),
        sa.Column("value_bytes", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replays", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("letter_id", name=op.f("uq_dead_letters_letter_id")),
    )
    op.create_index("ix_dead_letters_created_at", "dead_letters", ["created_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
