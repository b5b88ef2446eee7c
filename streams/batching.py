"""Group-commit batching for the agents: read events while the previous batch commits.

Faust's `take(max, within)` waits `within` for each batch and stops reading while the batch is
processed, so a lone event always waits and a backlog moves in small batches. Here the reader
and the committer run side by side: a commit starts as soon as there is anything to commit, and
takes everything that arrived while the previous one ran (up to `max_batch`). One commit at a
time, in arrival order; the reader waits when `max_batch` events are waiting (backpressure).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def group_commit(
    source: AsyncIterable[T], commit: Callable[[Sequence[T]], Awaitable[bool]], *, max_batch: int
) -> None:
    """Feed `source` to `commit` in batches until the source ends or `commit` returns False
    (stop: that batch and anything read after it were not committed). An exception from
    `commit` is raised here; items read but not committed are simply not acknowledged."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    waiting: list[T] = []
    have_items = asyncio.Event()
    have_room = asyncio.Event()
    have_room.set()
    source_done = False

    async def committer() -> None:
        while True:
            await have_items.wait()
            if not waiting:
                if source_done:
                    return
                have_items.clear()
                continue
            batch = waiting[:max_batch]
            del waiting[:max_batch]
            if not waiting and not source_done:
                have_items.clear()
            have_room.set()
            if not await commit(batch):
                return

    task = asyncio.create_task(committer())
    try:
        async for item in source:
            if task.done():
                break
            waiting.append(item)
            have_items.set()
            if len(waiting) >= max_batch:
                have_room.clear()
                room = asyncio.create_task(have_room.wait())
                await asyncio.wait({room, task}, return_when=asyncio.FIRST_COMPLETED)
                room.cancel()
        source_done = True
        have_items.set()
        await task
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    task.result()  # re-raise the committer's exception, if any
