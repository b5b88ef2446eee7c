"""training_samples rows are COPYed without two foreign-key checks per row.

The only writer of training_samples (`SampleRepository.ingest`) inserts each sample in the
transaction that first inserts its `sample_batches` row (itself checked against `datasets`) and
holds its dataset row locked: both references hold by construction. The checks cost two index
lookups and a row lock per sample (about half of the ingest's database time, measured with
bench/bench_streams.py). Nothing deletes datasets or batches, so the cascades had no use.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("fk_training_samples_batch_event_id_sample_batches", "training_samples", type_="foreignkey")
    op.drop_constraint("fk_training_samples_dataset_id_datasets", "training_samples", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "fk_training_samples_dataset_id_datasets",
        "training_samples",
        "datasets",
        ["dataset_id"],
        ["dataset_id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        "fk_training_samples_batch_event_id_sample_batches",
        "training_samples",
        "sample_batches",
        ["batch_event_id"],
        ["event_id"],
        ondelete="CASCADE",
    )
