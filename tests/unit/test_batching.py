"""group_commit: batches in order, a lone item is committed at once, a backlog moves in large
batches, backpressure at max_batch, stop and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from fcl.streams.batching import group_commit


async def items(n: int, *, gap: float = 0.0) -> AsyncIterator[int]:
    for i in range(n):
        if gap:
            await asyncio.sleep(gap)
        else:
            await asyncio.sleep(0)  # a source that yields control between items, as a consumer does
        yield i


async def test_every_item_is_committed_once_in_order_in_bounded_batches() -> None:
    batches: list[list[int]] = []

    async def commit(batch: Sequence[int]) -> bool:
        batches.append(list(batch))
        await asyncio.sleep(0.005)  # a commit takes a while; items keep arriving meanwhile
        return True

    await group_commit(items(2000), commit, max_batch=300)
    assert [i for b in batches for i in b] == list(range(2000))
    assert max(len(b) for b in batches) <= 300
    # while one commit runs the next batch fills: far fewer commits than items
    assert len(batches) < 50


async def test_a_lone_item_is_committed_without_waiting_for_more() -> None:
    committed_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def commit(batch: Sequence[int]) -> bool:
        committed_at.append(loop.time())
        return True

    async def one_then_silence() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0.3)

    start = loop.time()
    await group_commit(one_then_silence(), commit, max_batch=100)
    assert len(committed_at) == 1 and committed_at[0] - start < 0.1


async def test_the_reader_waits_when_max_batch_items_are_waiting() -> None:
    read = 0
    release = asyncio.Event()
    seen_while_blocked: list[int] = []

    async def source() -> AsyncIterator[int]:
        nonlocal read
        for i in range(100):
            read += 1
            yield i

    async def commit(batch: Sequence[int]) -> bool:
        if not release.is_set():
            await asyncio.sleep(0.05)
            seen_while_blocked.append(read)
            release.set()
        return True

    await group_commit(source(), commit, max_batch=10)
    # during the first (slow) commit of 10, at most 10 more were read and held
    assert seen_while_blocked and seen_while_blocked[0] <= 21


async def test_commit_returning_false_stops_without_committing_more() -> None:
    batches: list[list[int]] = []

    async def commit(batch: Sequence[int]) -> bool:
        batches.append(list(batch))
        return len(batches) < 2

    await group_commit(items(1000, gap=0.001), commit, max_batch=5)
    assert len(batches) == 2


async def test_an_error_in_commit_is_raised() -> None:
    async def commit(batch: Sequence[int]) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await group_commit(items(10), commit, max_batch=5)


async def test_max_batch_must_be_positive() -> None:
    async def commit(batch: Sequence[int]) -> bool:
        return True

    with pytest.raises(ValueError):
        await group_commit(items(1), commit, max_batch=0)
