"""The live evaluation, run by every trainer worker (`FCL_LIVE_EVAL_SECONDS`), one of them a round.

For each version predictions were logged for in the last two days, and each window (`hour`,
`day`, ending now, by the predictions' `occurred_at`): the counts (predictions, with an outcome,
repeated, late, unknown) and the figures of `trainers.live` over the newest `MAX_PAIRS` pairs,
saved where `GET /model-versions/{type}/{version}/live` and `/metrics` read them. A round that
fails (database unreachable) is logged and the next one tries again."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from fcl.storage.errors import StorageError
from fcl.storage.stores import WorkerStore
from fcl.trainers import live

log = logging.getLogger("fcl.trainer")

WINDOWS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_PAIRS = 20_000  # the newest pairs of a window its figures are computed on (the counts are of all)
RECENT = timedelta(days=2)  # versions with a prediction logged within this are evaluated


async def evaluate(store: WorkerStore, *, every: float, now: datetime | None = None) -> int:
    """One round, when no worker took one in the last `every` seconds: the number of (version,
    window) figures saved (0 when another worker has this round)."""
    if not await store.take_live_turn(every * 0.9):
        return 0
    until = now or datetime.now(UTC)
    saved = 0
    for v in await store.versions_to_evaluate(RECENT):
        for name, width in WINDOWS.items():
            since = until - width
            window = await store.live_window(v.model_type, v.version, since=since, until=until, limit=MAX_PAIRS)
            computed = await asyncio.to_thread(
                live.figures, v.model_type, window.pairs, profile=v.profile, validated=v.metrics, version=v.version
            )
            figures: dict[str, Any] = {
                "model_type": v.model_type,
                "version": v.version,
                "window": name,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "predictions": window.predictions,
                "with_outcome": window.with_outcome,
                "outcome_share": window.with_outcome / window.predictions if window.predictions else None,
                "repeated_outcomes": window.repeated_outcomes,
                "late_outcomes": window.late,
                "unknown_outcomes": window.unknown_outcomes,
                "evaluated_pairs": len(window.pairs),
                **computed,
            }
            await store.save_live_figures(v.model_type, v.version, name, figures)
            saved += 1
    return saved


async def run(store: WorkerStore, *, every: float) -> None:
    """A round every `every` seconds, for ever."""
    while True:
        try:
            await evaluate(store, every=every)
        except StorageError as exc:
            log.warning("live evaluation failed: %s", exc)
        await asyncio.sleep(every)
