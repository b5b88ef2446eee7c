"""The retention of model versions, run by every trainer worker (`retention_sweep_seconds`).

Kept: each model type's champion, its newest `keep_versions` versions, and every version a
champion move of the last `keep_days` named (as the new or the previous champion: what a
rollback may need). The others are removed in three steps that can stop anywhere and be run
again, by any number of workers at once: the version is marked deleted (it can no longer serve,
and its download answers 410), its artifact is deleted from the store, and that is recorded. The
version's row stays, for lineage, the history and the ledger. Upload leftovers (temporary
objects older than a day) are removed too, and the Idempotency-Keys of champion moves older
than a week, and the refused inputs kept longer than FCL_DEAD_LETTER_RETENTION_DAYS. Samples go by
whole days (storage.datasets.SampleRetention): a day older than FCL_SAMPLE_RETENTION_DAYS is dropped
once no dataset's training window and no champion's reference set reads any of its rows; the ids
of the samples events whose samples have all gone are forgotten after them. Predictions and the
outcomes that waited for one are kept as long as samples.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from fcl.contract import model_types
from fcl.storage.artifacts import ArtifactError, ArtifactStore
from fcl.storage.stores import WorkerStore

log = logging.getLogger("fcl.trainer")
OPERATOR_KEYS_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class RetentionPolicy:
    keep_versions: int = 10
    keep_days: float = 30.0
    dead_letter_days: float = 30.0  # FCL_DEAD_LETTER_RETENTION_DAYS
    sample_days: float = 30.0  # FCL_SAMPLE_RETENTION_DAYS; predictions and outcomes too
    windows: Mapping[str, int] = field(default_factory=dict)  # model type -> training window
    partition_seconds: int = 86400  # FCL_SAMPLE_PARTITION_SECONDS
    partitions_ahead: int = 9  # made before their rows arrive: the sweep runs well within them


@dataclass
class RetentionResult:
    marked: dict[str, list[int]] = field(default_factory=dict)  # model type -> versions marked deleted now
    artifacts_removed: int = 0
    failed: set[tuple[str, int]] = field(default_factory=set)  # artifacts the store did not delete this time
    temporaries_removed: int = 0
    operator_keys_forgotten: int = 0
    dead_letters_forgotten: int = 0
    sample_days_dropped: list[str] = field(default_factory=list)  # the partitions of samples dropped
    sample_batches_forgotten: int = 0  # ids of samples events none of whose samples is kept
    predictions_forgotten: int = 0  # predictions, and outcomes that waited for one in vain


async def sweep(db: WorkerStore, store: ArtifactStore, policy: RetentionPolicy) -> RetentionResult:
    result = RetentionResult()
    for model_type in model_types.names():
        marked = await db.mark_for_retention(model_type, keep_versions=policy.keep_versions, keep_days=policy.keep_days)
        if marked:
            result.marked[model_type] = marked
    while True:
        pending = await db.artifacts_to_remove()
        pending = [v for v in pending if (v.model_type, v.version) not in result.failed]
        if not pending:
            break
        for version in pending:
            try:
                await asyncio.to_thread(store.delete, version.artifact_path)
            except ArtifactError as exc:
                result.failed.add((version.model_type, version.version))
                log.warning(
                    "retention: the artifact of %s v%s stays for now: %s", version.model_type, version.version, exc
                )
                continue
            await db.artifact_removed(version.model_type, version.version)
            result.artifacts_removed += 1
    # An operator's retry comes within minutes; a week keeps every real one answered.
    result.operator_keys_forgotten = await db.forget_operator_keys(older_than=OPERATOR_KEYS_KEPT)
    result.sample_days_dropped = await db.sample_retention(
        keep_days=policy.sample_days,
        windows=dict(policy.windows),
        partition_seconds=policy.partition_seconds,
        ahead=policy.partitions_ahead,
    )
    result.sample_batches_forgotten = await db.forget_sample_batches(keep_days=policy.sample_days)
    result.predictions_forgotten = await db.forget_predictions(older_than=timedelta(days=policy.sample_days))
    result.dead_letters_forgotten = await db.forget_dead_letters(older_than=timedelta(days=policy.dead_letter_days))
    try:
        result.temporaries_removed = await asyncio.to_thread(store.remove_temporaries, 86400.0)
    except ArtifactError as exc:
        log.warning("retention: temporary uploads not removed: %s", exc)
    return result
