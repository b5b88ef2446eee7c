"""The one lifecycle (contract.service.Service): started once, asked to stop, cancelled when it does
not stop within its grace, its resources released after its task ended, whatever the way."""

from __future__ import annotations

import asyncio

import pytest

from fcl.contract.service import Service


class Polite(Service):
    name = "polite"
    grace = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0
        self.released = False

    async def run(self) -> None:
        while not await self.sleep(0.01):
            self.rounds += 1

    async def stopped(self) -> None:
        self.released = True


class Stubborn(Polite):
    grace = 0.05

    async def run(self) -> None:
        await asyncio.sleep(3600)  # never looks at `stopping`


class Broken(Polite):
    async def run(self) -> None:
        raise RuntimeError("boom")


async def test_a_service_starts_once_and_ends_by_itself_when_asked() -> None:
    service = Polite()
    task = service.start()
    assert service.start() is task and task.get_name() == "fcl-polite"
    await asyncio.sleep(0.05)
    await service.stop()
    assert task.done() and not task.cancelled() and service.rounds > 0 and service.released
    assert service.task is None and service.stopping


async def test_a_service_that_does_not_stop_is_cancelled_after_its_grace() -> None:
    async with Stubborn() as service:
        task = service.task
        assert task is not None
    assert task.cancelled() and service.released


async def test_an_error_of_the_task_reaches_the_caller_of_stop_and_still_releases() -> None:
    service = Broken()
    service.start()
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="boom"):
        await service.stop()
    assert service.released


async def test_a_service_never_started_only_releases() -> None:
    service = Polite()
    await service.stop()
    assert service.released and service.rounds == 0
