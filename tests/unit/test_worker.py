"""The trainer worker's loop and job supervision against in-memory fakes of its queue and its
training children (tests/fakes.py): what it claims, what it records for each way a training ends,
how it re-judges a candidate when the champion moved, how it drains, and how it rides out a
database outage. The same loop runs against PostgreSQL and real children in
tests/integration/test_trainer_worker.py."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from fcl.contract.enums import JobStatus
from fcl.storage.entities import CompletedAttempt, EndedAttempt
from fcl.storage.retry import RetryDecision, RetryPolicy
from fcl.worker.job import WorkerConfig
from fcl.worker.loop import TrainerWorker
from fcl.worker.messages import Mode
from fcl.worker.runner import math_threads
from tests.fakes import FakeChild, FakeQueue, FakeRunner, fails, hangs, new_job, succeeds, training_task


def config(**overrides: Any) -> WorkerConfig:
    base: dict[str, Any] = dict(
        worker_id="w-test",
        database_url="postgresql+asyncpg://unused/x",
        artifact_url="/tmp/a",
        heartbeat_seconds=0.05,
        poll_seconds=0.02,
        drain_seconds=5.0,
        lease=timedelta(seconds=30),
        retry=RetryPolicy(base_seconds=10, max_seconds=60),
    )
    return WorkerConfig(**{**base, **overrides})


async def run_until(worker: TrainerWorker, done: Any, timeout: float = 10.0) -> None:
    """Run the loop until `done()`, then stop it and wait for it to return."""
    worker.start()
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.01)
    finally:
        await asyncio.wait_for(worker.stop(), 10)


def finished(queue: FakeQueue) -> bool:
    return all(j.status.is_final for j in queue.jobs.values())


async def test_jobs_are_claimed_by_rank_trained_and_completed_with_their_outcome() -> None:
    queue = FakeQueue()
    low, high = queue.add(new_job("low", priority=1)), queue.add(new_job("high", priority=9))
    runner = FakeRunner()
    worker = TrainerWorker(queue, runner, config())
    await run_until(worker, lambda: finished(queue))
    assert queue.recorded("claim") == [high.id, low.id]
    completed = queue.recorded("complete")
    assert len(completed) == 2 and all(isinstance(c, CompletedAttempt) for c in completed)
    first = completed[0]
    assert isinstance(first, CompletedAttempt)
    assert (first.dataset_watermark, first.validated_against, first.candidate.sample_count) == (42, 0, 10)
    assert first.candidate.metrics == {"roc_auc": 0.8} and first.candidate.passed
    assert [t.mode for t in runner.started] == [Mode.FIT, Mode.FIT]
    assert all(child.stopped for child in runner.children)  # no child outlives its job
    assert queue.beats and queue.beats[-1].info["stopping"] is True


async def test_a_moved_champion_judges_the_same_candidate_again_without_fitting_it_again() -> None:
    queue = FakeQueue(champion_moves=2)
    job = queue.add(new_job())
    runner = FakeRunner()
    await run_until(TrainerWorker(queue, runner, config()), lambda: finished(queue))
    assert queue.jobs[job.id].status is JobStatus.COMPLETED
    assert runner.modes() == [Mode.FIT, Mode.EVALUATE, Mode.EVALUATE]
    fit, *again = runner.started
    for task in again:  # the stored candidate, on the same samples, with what its fit measured
        assert task.candidate is not None and task.candidate.path.endswith(f"{job.id}-a1.skops")
        assert task.watermark == fit.watermark and task.seed == fit.seed and task.attempt == fit.attempt
        assert task.fit_metrics == {"loss": 0.1} and task.fit_seconds == 1.5
        assert task.hyperparameters == {"n_estimators": 5}
    assert len(queue.recorded("complete")) == 3 and not queue.recorded("fail")


async def test_a_champion_that_never_stops_moving_fails_the_attempt_as_retriable() -> None:
    queue = FakeQueue(champion_moves=1000)
    job = queue.add(new_job(max_attempts=1))
    runner = FakeRunner()
    await run_until(TrainerWorker(queue, runner, config()), lambda: finished(queue), timeout=20)
    [(attempt, decision)] = queue.failures()
    assert attempt.error_type == "ChampionChanged" and not decision.retry  # its one attempt is used
    assert runner.modes().count(Mode.FIT) == 1 and queue.jobs[job.id].status is JobStatus.FAILED


async def test_failures_go_back_by_the_retry_policy_and_the_queue_goes_on() -> None:
    queue = FakeQueue()
    flaky = queue.add(new_job("flaky", priority=9))
    broken = queue.add(new_job("broken", priority=5))
    ok = queue.add(new_job("ok", priority=1))

    def script(task: Any) -> Any:
        if task.job_id == flaky.id:
            return fails("NonFiniteLossError", retriable=True)(task)
        if task.job_id == broken.id:
            return fails("InvalidDataError", retriable=False)(task)
        return [None, *FakeRunner().script(task)]

    worker = TrainerWorker(queue, FakeRunner(script), config(), rng=random.Random(7))
    await run_until(worker, lambda: queue.jobs[ok.id].status.is_final and queue.jobs[broken.id].status.is_final)
    decisions = {a.error_type: d for a, d in queue.failures()}
    assert decisions["NonFiniteLossError"].retry
    assert timedelta(seconds=5) <= decisions["NonFiniteLossError"].delay <= timedelta(seconds=10)  # equal jitter
    assert not decisions["InvalidDataError"].retry and "cannot be fixed" in decisions["InvalidDataError"].reason
    assert queue.jobs[flaky.id].status is JobStatus.QUEUED  # back, after its delay
    assert queue.jobs[broken.id].status is JobStatus.FAILED and queue.jobs[ok.id].status is JobStatus.COMPLETED


class SlowToGoChild(FakeChild):
    """A child that answered and takes a while to be gone: its stop waits until `gone` is set."""

    def __init__(self, messages: list[Any], gone: asyncio.Event, log: list[str]) -> None:
        super().__init__(messages)
        self.gone, self.log = gone, log

    async def stop(self) -> None:
        self.log.append("stopping")
        await self.gone.wait()
        self.log.append("gone")
        self.stopped = True


async def test_a_result_is_recorded_while_its_child_is_reaped_and_the_slot_waits_for_the_child() -> None:
    """The child exits by itself once it has answered: its completion does not wait for it, but the
    worker's slot does (never more children than its concurrency)."""
    queue = FakeQueue()
    first, second = queue.add(new_job("first", priority=9)), queue.add(new_job("second", priority=1))
    gone, log = asyncio.Event(), list[str]()
    runner = FakeRunner()

    async def start(task: Any) -> FakeChild:
        runner.started.append(task)
        child = SlowToGoChild(list(succeeds(task)), gone, log)
        runner.children.append(child)
        return child

    runner.start = start  # type: ignore[method-assign]
    worker = TrainerWorker(queue, runner, config())
    worker.start()
    try:
        async with asyncio.timeout(10):
            while queue.jobs[first.id].status is not JobStatus.COMPLETED:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # time enough to claim the next job, were the slot free
            assert log == ["stopping"] and not runner.children[0].stopped
            assert queue.recorded("claim") == [first.id] and first.id in worker.running
            gone.set()
            while queue.jobs[second.id].status is not JobStatus.COMPLETED:
                await asyncio.sleep(0.01)
    finally:
        gone.set()
        await asyncio.wait_for(worker.stop(), 10)
    assert queue.recorded("claim") == [first.id, second.id] and all(c.stopped for c in runner.children)


async def test_a_training_past_its_timeout_is_stopped_and_counted_as_a_retriable_failure() -> None:
    queue = FakeQueue()
    job = queue.add(new_job())
    runner = FakeRunner(hangs)
    await run_until(TrainerWorker(queue, runner, config(timeouts={"goal": 0.3})), lambda: bool(queue.recorded("fail")))
    [(attempt, decision)] = queue.failures()
    assert isinstance(attempt, EndedAttempt) and isinstance(decision, RetryDecision)
    assert attempt.error_type == "TrainingTimeout" and decision.retry
    assert runner.children[0].stopped and queue.jobs[job.id].status is JobStatus.QUEUED


async def test_a_cancel_seen_at_a_heartbeat_stops_the_training_and_records_it() -> None:
    queue = FakeQueue()
    job = queue.add(new_job())
    queue.cancel.add(job.id)
    runner = FakeRunner(hangs)
    await run_until(TrainerWorker(queue, runner, config()), lambda: finished(queue))
    [cancelled] = queue.recorded("finish_cancelled")
    assert isinstance(cancelled, EndedAttempt) and cancelled.error_type == "Cancelled"
    assert runner.children[0].stopped and not queue.recorded("complete")


async def test_a_lost_lease_records_nothing() -> None:
    queue = FakeQueue()
    job = queue.add(new_job())
    queue.lost.add(job.id)
    runner = FakeRunner(hangs)
    worker = TrainerWorker(queue, runner, config())
    await run_until(worker, lambda: bool(runner.children) and runner.children[0].stopped and not worker.running)
    assert not queue.recorded("fail") and not queue.recorded("release") and not queue.recorded("complete")


async def test_stop_drains_then_releases_a_running_job_without_counting_it() -> None:
    queue = FakeQueue()
    job = queue.add(new_job())
    runner = FakeRunner(hangs)
    worker = TrainerWorker(queue, runner, config(drain_seconds=0.2))
    task = worker.start()
    while not runner.started:
        await asyncio.sleep(0.01)
    worker.request_stop()  # what SIGTERM does
    await asyncio.wait_for(task, 10)  # run() returns once the job is back
    [released] = queue.recorded("release")
    assert isinstance(released, EndedAttempt) and released.error_type == "Released"
    assert queue.jobs[job.id].status is JobStatus.QUEUED and queue.jobs[job.id].attempts == 0
    assert runner.children[0].stopped and len(queue.recorded("claim")) == 1  # no claim after stop


async def test_a_database_outage_delays_the_loop_but_does_not_stop_it() -> None:
    queue = FakeQueue(outage=3)  # the announce, the lease expiry and the first claim fail
    job = queue.add(new_job())
    await run_until(TrainerWorker(queue, FakeRunner(), config()), lambda: finished(queue))
    assert queue.jobs[job.id].status is JobStatus.COMPLETED


async def test_a_completion_whose_answer_was_lost_is_retried_safely_and_recorded_once() -> None:
    """The success transaction committed, then the connection dropped before its answer: the
    retry finds the lease gone and the job completed by this attempt, and takes that as done —
    one version, no failure counted. A completion that did not commit (an outage) is retried."""
    queue = FakeQueue(lost_answers=1)
    job = queue.add(new_job("blip"))
    worker = TrainerWorker(queue, FakeRunner(), config())
    await run_until(worker, lambda: finished(queue))
    assert queue.jobs[job.id].status is JobStatus.COMPLETED and queue.versions == 1
    assert queue.recorded("completed_by") == [1] and queue.failures() == []


async def test_a_failover_at_completion_is_waited_out_and_the_training_kept(monkeypatch: Any) -> None:
    """A failover while the result is recorded: 60 failed tries (two minutes at the real pace of
    one every two seconds) and the training is still recorded, once, with no attempt counted."""
    from fcl.worker import job as job_module

    waits: list[float] = []

    def pause(left: float) -> float:
        waits.append(min(2.0, left))
        return 0.001

    monkeypatch.setattr(job_module, "_pause", pause)
    queue = FakeQueue(completion_outage=60)
    job = queue.add(new_job("failover"))
    await run_until(TrainerWorker(queue, FakeRunner(), config()), lambda: finished(queue), timeout=20)
    assert queue.jobs[job.id].status is JobStatus.COMPLETED and queue.versions == 1
    assert queue.failures() == [] and len(waits) == 60 and sum(waits) == 120.0


async def test_a_woken_worker_claims_at_once_and_the_next_job_follows_the_last_without_a_poll() -> None:
    queue = FakeQueue()
    worker = TrainerWorker(queue, FakeRunner(), config(poll_seconds=60.0))  # a poll would never come
    worker.start()
    try:
        await asyncio.sleep(0.2)  # it looked, found nothing, and waits for its poll
        assert queue.recorded("claim") == []
        first, second = queue.add(new_job("a", priority=9)), queue.add(new_job("b", priority=1))
        worker.wake()  # what the fcl_queued notification does
        async with asyncio.timeout(5):
            while not finished(queue):
                await asyncio.sleep(0.01)
        # concurrency 1: the second job was claimed when the first ended, not at a poll 60 s away
        assert queue.recorded("claim") == [first.id, second.id]
    finally:
        await asyncio.wait_for(worker.stop(), 10)


def test_concurrent_trainings_share_the_cores_instead_of_each_taking_all() -> None:
    assert [math_threads(c, cores=2) for c in (1, 2, 3)] == [2, 1, 1]
    assert [math_threads(c, cores=16) for c in (1, 2, 4, 8)] == [4, 4, 4, 2]


def test_a_store_blip_at_the_champion_read_is_retried_before_any_verdict() -> None:
    from fcl.storage.artifacts import ArtifactError, StoredArtifact
    from fcl.trainers.base import Artifact
    from fcl.worker.child import _read_with_retries

    class BlinkingStore:
        def __init__(self, failures: int) -> None:
            self.failures, self.reads = failures, 0

        def read(self, stored: StoredArtifact) -> Artifact:
            self.reads += 1
            if self.reads <= self.failures:
                raise ArtifactError("the store timed out")
            return Artifact(format="safetensors", data=b"x")

    stored = StoredArtifact(path="p", sha256="0" * 64, size=1, format="safetensors")
    store = BlinkingStore(failures=2)
    assert _read_with_retries(store, stored, waits=(0.0, 0.0, 0.0)).data == b"x"  # type: ignore[arg-type]
    assert store.reads == 3
    gone = BlinkingStore(failures=10)
    try:
        _read_with_retries(gone, stored, waits=(0.0, 0.0))  # type: ignore[arg-type]
    except ArtifactError:
        assert gone.reads == 3  # every wait, then the last error
    else:
        raise AssertionError("an artifact that never reads must raise")


def test_the_champion_is_read_from_the_store_while_the_samples_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither waits for the other: the loader only returns once the read has begun, and the read
    only returns once the loader has begun (one after the other would never finish either)."""
    import threading

    from fcl.storage.entities import StoredArtifactRef
    from fcl.trainers.base import Artifact
    from fcl.worker import child

    reading, loading = threading.Event(), threading.Event()

    async def load_samples(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        loading.set()
        assert await asyncio.to_thread(reading.wait, 5), "the champion was not being read meanwhile"
        return [{"loaded": True}]

    def read(store: Any, stored: Any) -> Artifact:
        reading.set()
        assert loading.wait(5), "the samples were not loading meanwhile"
        return Artifact(format="skops", data=b"champion")

    class Loaded(Exception):
        pass

    def usable(model_type: str, samples: list[dict[str, Any]]) -> Any:
        raise Loaded(samples)

    monkeypatch.setattr(child, "load_samples", load_samples)
    monkeypatch.setattr(child, "_read_with_retries", read)
    monkeypatch.setattr(child, "usable_samples", usable)
    task = training_task(
        champion=StoredArtifactRef(path="/nowhere/c", sha256="0" * 64, size=8, format="skops"), champion_version=1
    )
    with pytest.raises(Loaded) as raised:
        child.train(task, lambda message: None)
    assert raised.value.args == ([{"loaded": True}],) and reading.is_set() and loading.is_set()


def test_the_fork_server_freezes_what_it_preloaded_before_any_child_is_forked() -> None:
    """The training children's fork server imports `fcl.worker.preloaded` last, which moves every
    object made so far to the collector's permanent generation (so no child's first collection
    walks, and copies, what it inherited)."""
    import subprocess
    import sys

    from fcl.worker.runner import _PRELOAD

    assert _PRELOAD[-1] == "fcl.worker.preloaded"
    code = (
        "import gc; before = gc.get_freeze_count(); import fcl.worker.preloaded; print(before, gc.get_freeze_count())"
    )
    before, after = map(
        int, subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout.split()
    )
    assert before == 0 and after > 1000
