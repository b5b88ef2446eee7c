"""A training's samples, read by the training child on one plain asyncpg connection (no engine,
no pool: a child reads once and exits) through a server-side cursor, a chunk at a time, so the
rows are never held twice (raw and decoded). With a window only the most recent N samples up to
the watermark are read: that bounds a training's memory whatever the dataset's size."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from storage.db import asyncpg_dsn
from storage.errors import DRIVER_ERRORS, wrap

CHUNK_ROWS = 5000


async def load_samples(
    url: str, dataset_id: str, *, up_to: int, window: int | None = None, chunk_rows: int = CHUNK_ROWS
) -> list[dict[str, Any]]:
    """The dataset's samples with id <= `up_to` (the last `window` of them when given), oldest
    first, in one read-only snapshot."""
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                after = 0
                if window is not None:
                    # The id just before the window: an index scan of (dataset_id, id), backwards.
                    after = (
                        await conn.fetchval(
                            "SELECT id FROM training_samples WHERE dataset_id = $1 AND id <= $2 "
                            "ORDER BY id DESC OFFSET $3 LIMIT 1",
                            dataset_id,
                            up_to,
                            window,
                        )
                        or 0
                    )
                return [
                    json.loads(row[0])
                    async for row in conn.cursor(
                        "SELECT payload::text FROM training_samples WHERE dataset_id = $1 AND id > $2 AND id <= $3 "
                        "ORDER BY id",
                        dataset_id,
                        after,
                        up_to,
                        prefetch=chunk_rows,
                    )
                ]
        finally:
            await conn.close()
    except DRIVER_ERRORS as exc:
        raise wrap(exc) from exc
