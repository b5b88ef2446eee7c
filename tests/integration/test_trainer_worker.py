"""`fcl trainer` processes against the real PostgreSQL and Kafka: jobs train real models in
priority order, results are recorded in one transaction with their events, and the worker
survives SIGKILL, raising and hung trainers, cancellation and SIGTERM. Status events are read
back from the broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.storage.datasets import SampleRepository, SampleRetention
from fcl.storage.db import Database
from fcl.storage.entities import NewSampleBatch
from fcl.storage.jobs import JobRepository
from fcl.storage.queue import JobQueue
from fcl.trainers.simulator import FinCoachSimulator
from tests import factories
from tests.conftest import RunStack, drop_database
from tests.integration.streams_support import eventually, read_topic, rows, scalar

FCL = str(Path(sys.executable).with_name("fcl"))


class Workers:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"trainer-{len(self.procs)}.log").open("ab") as log:
            proc = subprocess.Popen(
                [FCL, "trainer"],
                env={**self.env, **extra},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        path = self.workdir / f"trainer-{len(self.procs) - 1}.log"
        while "ready" not in path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"trainer did not start:\n{self.logs()}")
            time.sleep(0.2)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-5000:] for p in sorted(self.workdir.glob("trainer-*.log")))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture
async def env(stack: RunStack, tmp_path: Path) -> AsyncIterator[tuple[Workers, Database, Settings]]:
    name = f"fcl_tw_{uuid.uuid4().hex[:10]}"
    url = await asyncio.to_thread(stack.migrated_database, name)
    prefix = f"fcl-tw-{uuid.uuid4().hex[:8]}."
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=url,
        topic_prefix=prefix,
        artifact_dir=tmp_path / "artifacts",
        _env_file=None,
    )
    await ensure_topics(settings)
    environ = {
        **os.environ,
        "FCL_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "FCL_DATABASE_URL": url,
        "FCL_TOPIC_PREFIX": prefix,
        "FCL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "FCL_HEARTBEAT_SECONDS": "0.5",
        "FCL_LEASE_SECONDS": "10",
        "FCL_RETRY_BASE_SECONDS": "0.2",
        "FCL_TRAINER_DEVICE": "cpu",
        "FCL_TRAINER_HYPERPARAMETERS": json.dumps({"goal": {"n_estimators": 20}, "segmentation": {"k_max": 5}}),
    }
    workers = Workers(environ, tmp_path)
    db = Database(url, pool_size=2)
    try:
        yield workers, db, settings
    finally:
        workers.stop_all()
        await db.close()
        await asyncio.to_thread(drop_database, stack.server_url, name)


async def store(db: Database, dataset_id: str, model_type: str, samples: list[dict[str, Any]]) -> None:
    await factories.store(db, dataset_id, model_type, samples)


async def trigger(
    db: Database, dataset_id: str, model_type: str, priority: int = 5, max_attempts: int = 3
) -> uuid.UUID:
    admission = await factories.admit(db, dataset_id, model_type, priority)
    await rows(
        db,
        "UPDATE training_jobs SET max_attempts = :n WHERE id = :id RETURNING id",
        n=max_attempts,
        id=admission.job_id,
    )
    return admission.job_id


def transitions(events: list[dict[str, Any]], job_id: uuid.UUID) -> list[str]:
    """A job's status sequence as published, progress updates folded into their state."""
    out: list[str] = []
    for e in events:
        if e["job_id"] == str(job_id) and (not out or out[-1] != e["status"]):
            out.append(e["status"])
    return out


async def status_events(settings: Settings, until) -> list[dict[str, Any]]:
    return await read_topic(settings, Topic.TRAINING_STATUS.full_name(settings.topic_prefix), until=until, timeout=60)


async def test_jobs_train_by_priority_and_each_result_is_recorded_with_its_events(env) -> None:
    workers, db, settings = env
    sim = FinCoachSimulator(seed=5, n_users=400)
    for name in ("low", "high", "mid"):
        await store(db, f"seg-{name}", "segmentation", sim.segmentation_samples())
    jobs = {
        name: await trigger(db, f"seg-{name}", "segmentation", priority)
        for name, priority in (("low", 1), ("high", 9), ("mid", 5))
    }
    workers.start()
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 3 FROM training_jobs WHERE status = 'completed'"),
        timeout=180,
        logs=workers.logs,
        what="3 jobs completed",
    )
    started = [r.dataset_id for r in await rows(db, "SELECT dataset_id FROM training_events ORDER BY started_at")]
    assert started == ["seg-high", "seg-mid", "seg-low"]
    versions = await rows(
        db, "SELECT version, job_id, artifact_sha256, artifact_size FROM model_versions ORDER BY version"
    )
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.job_id for v in versions] == [jobs["high"], jobs["mid"], jobs["low"]]
    for v in versions:  # artifacts are on disk with the recorded checksum
        path = await scalar(db, "SELECT artifact_path FROM model_versions WHERE version = :v", v=v.version)
        data = Path(path).read_bytes()
        import hashlib

        assert len(data) == v.artifact_size and hashlib.sha256(data).hexdigest() == v.artifact_sha256
    ledger = await rows(db, "SELECT version, previous_version FROM champion_ledger ORDER BY seq")
    assert ledger[0].version == 1 and ledger[0].previous_version is None
    assert all(b.previous_version == a.version for a, b in itertools.pairwise(ledger))
    checks = await scalar(db, "SELECT count(*) FROM validation_results")
    assert checks >= 3 * 2  # the first version on value checks; later ones on change checks too
    assert await scalar(db, "SELECT bool_and(samples_since_training = 0) FROM datasets")
    events = await status_events(settings, lambda r: sum(e["status"] == "completed" for e in r) >= 3)
    for job_id in jobs.values():
        assert transitions(events, job_id) == ["queued", "in_progress", "completed"]
    validations = await read_topic(
        settings, Topic.TRAINING_VALIDATION.full_name(settings.topic_prefix), until=lambda r: len(r) >= 3, timeout=30
    )
    assert sorted(v["candidate_version"] for v in validations) == [1, 2, 3]
    assert all(len(v["checks"]) >= 2 for v in validations)
    moves = await read_topic(
        settings,
        Topic.MODEL_VERSIONS.full_name(settings.topic_prefix),
        until=lambda r: len(r) >= len(ledger),
        timeout=30,
    )
    assert [m["version"] for m in moves] == [r.version for r in ledger]


LONG_CQL = {"recommendation": {"steps": 2_000_000, "hidden": [32, 32], "fqe_steps": 100}}
QUICK_CQL = {"recommendation": {"steps": 300, "hidden": [32, 32], "fqe_steps": 100}}


async def _under_way(db: Database, workers: Workers) -> None:
    """Until the one running job has reported progress."""
    await eventually(
        lambda: scalar(
            db, "SELECT coalesce(bool_or(progress > 0), false) FROM training_jobs WHERE status = 'in_progress'"
        ),
        timeout=60,
        logs=workers.logs,
        what="training under way",
    )


async def _completes_on_a_quick_worker(db: Database, workers: Workers) -> None:
    """Start a worker with a short training and wait until the one job completed on it."""
    workers.start(FCL_TRAINER_HYPERPARAMETERS=json.dumps(QUICK_CQL))
    await eventually(
        lambda: scalar(db, "SELECT status = 'completed' FROM training_jobs"),
        timeout=120,
        logs=workers.logs,
        what="the job completed on the next worker",
    )


async def test_sigkill_mid_training_runs_the_job_again_once_with_one_version(env) -> None:
    workers, db, settings = env
    await store(db, "reco", "recommendation", FinCoachSimulator(seed=6, n_users=200).recommendation_samples(300))
    job_id = await trigger(db, "reco", "recommendation")
    first = workers.start(FCL_TRAINER_HYPERPARAMETERS=json.dumps(LONG_CQL))
    await _under_way(db, workers)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its training child
    first.wait(10)
    await _completes_on_a_quick_worker(db, workers)
    assert await scalar(db, "SELECT attempts FROM training_jobs") == 2
    assert await scalar(db, "SELECT count(*) FROM model_versions") == 1
    outcomes = [r.status for r in await rows(db, "SELECT status FROM training_events ORDER BY attempt")]
    assert outcomes == ["abandoned", "completed"]
    files = sorted(p.name for p in (Path(settings.artifact_dir) / "recommendation").iterdir())
    registered = Path(await scalar(db, "SELECT artifact_path FROM model_versions")).name
    assert files == [registered]  # nothing partial from the killed attempt
    events = await status_events(settings, lambda r: any(e["status"] == "completed" for e in r))
    assert transitions(events, job_id) == ["queued", "in_progress", "queued", "in_progress", "completed"]
    assert [e["attempt"] for e in events if e["status"] == "queued"] == [1, 2]


async def test_a_raising_trainer_is_retried_then_fails_and_the_queue_goes_on(env) -> None:
    workers, db, settings = env
    # A learning rate that makes the loss diverge (huge rewards once did; the input limits now keep
    # every number within 1e15, and a sample beyond them is skipped at training).
    await store(db, "diverges", "recommendation", FinCoachSimulator(seed=7, n_users=50).recommendation_samples(200))
    await store(db, "goals", "goal", FinCoachSimulator(seed=7, n_users=300).goal_samples())
    failing = await trigger(db, "diverges", "recommendation", priority=9, max_attempts=2)
    fine = await trigger(db, "goals", "goal", priority=1)
    workers.start(
        FCL_TRAINER_HYPERPARAMETERS=json.dumps(
            {"recommendation": {"steps": 500, "learning_rate": 1e30, "hidden": [16]}, "goal": {"n_estimators": 20}}
        )
    )
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 2 FROM training_jobs WHERE status IN ('failed', 'completed')"),
        timeout=120,
        logs=workers.logs,
        what="both jobs finished",
    )
    failed = await rows(
        db, "SELECT id, status, attempts, error_type, error_message FROM training_jobs WHERE id = :i", i=failing
    )
    assert failed[0].status == "failed" and failed[0].attempts == 2
    assert failed[0].error_type == "NonFiniteLossError" and "became" in failed[0].error_message
    assert await scalar(db, "SELECT status FROM training_jobs WHERE id = :i", i=fine) == "completed"
    events = await status_events(settings, lambda r: sum(e["status"] in ("failed", "completed") for e in r) >= 2)
    assert transitions(events, failing) == ["queued", "in_progress", "queued", "in_progress", "failed"]
    final = next(e for e in events if e["job_id"] == str(failing) and e["status"] == "failed")
    assert final["error"]["type"] == "NonFiniteLossError"


async def test_a_hung_trainer_is_killed_at_its_timeout(env) -> None:
    workers, db, _ = env
    await store(db, "slow", "recommendation", FinCoachSimulator(seed=8, n_users=50).recommendation_samples(200))
    await store(db, "goals", "goal", FinCoachSimulator(seed=8, n_users=300).goal_samples())
    slow = await trigger(db, "slow", "recommendation", priority=9, max_attempts=2)
    fine = await trigger(db, "goals", "goal", priority=1)
    workers.start(
        FCL_TRAINER_HYPERPARAMETERS=json.dumps({**LONG_CQL, "goal": {"n_estimators": 20}}),
        FCL_TRAINER_TIMEOUTS=json.dumps({"recommendation": 3}),
    )
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 2 FROM training_jobs WHERE status IN ('failed', 'completed')"),
        timeout=120,
        logs=workers.logs,
        what="both jobs finished",
    )
    row = (await rows(db, "SELECT status, attempts, error_type FROM training_jobs WHERE id = :i", i=slow))[0]
    assert (row.status, row.attempts, row.error_type) == ("failed", 2, "TrainingTimeout")
    assert await scalar(db, "SELECT status FROM training_jobs WHERE id = :i", i=fine) == "completed"
    assert await scalar(db, "SELECT count(*) FROM model_versions WHERE model_type = 'recommendation'") == 0


async def test_cancel_stops_a_running_training_and_records_no_version(env) -> None:
    workers, db, settings = env
    await store(db, "reco", "recommendation", FinCoachSimulator(seed=9, n_users=50).recommendation_samples(200))
    job_id = await trigger(db, "reco", "recommendation")
    workers.start(FCL_TRAINER_HYPERPARAMETERS=json.dumps(LONG_CQL))
    await eventually(lambda: scalar(db, "SELECT status = 'in_progress' FROM training_jobs"), logs=workers.logs)
    async with db.transaction() as s:
        asked = await JobQueue(s).cancel(job_id)
    assert asked is not None and asked.job.cancel_requested
    await eventually(
        lambda: scalar(db, "SELECT status = 'cancelled' FROM training_jobs"),
        timeout=30,
        logs=workers.logs,
        what="cancelled",
    )
    assert await scalar(db, "SELECT count(*) FROM model_versions") == 0
    assert await scalar(db, "SELECT status FROM training_events") == "cancelled"
    events = await status_events(settings, lambda r: any(e["status"] == "cancelled" for e in r))
    assert transitions(events, job_id) == ["queued", "in_progress", "cancelled"]


async def test_sigterm_drains_then_puts_the_job_back_without_counting_it(env) -> None:
    workers, db, settings = env
    await store(db, "reco", "recommendation", FinCoachSimulator(seed=10, n_users=50).recommendation_samples(200))
    job_id = await trigger(db, "reco", "recommendation")
    proc = workers.start(FCL_TRAINER_HYPERPARAMETERS=json.dumps(LONG_CQL), FCL_DRAIN_SECONDS="1")
    await eventually(lambda: scalar(db, "SELECT status = 'in_progress' FROM training_jobs"), logs=workers.logs)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    job = (await rows(db, "SELECT status, attempts, lease_token FROM training_jobs"))[0]
    assert (job.status, job.attempts, job.lease_token) == ("queued", 0, None)
    assert await scalar(db, "SELECT status FROM training_events") == "abandoned"
    events = await status_events(settings, lambda r: sum(e["status"] == "queued" for e in r) >= 2)
    assert transitions(events, job_id) == ["queued", "in_progress", "queued"]
    released = [e for e in events if e["status"] == "queued"][-1]
    assert released["attempt"] == 1 and "shutting down" in released["message"]


@pytest.mark.parametrize("target", ["main process", "process group"])
async def test_a_rolling_restart_loses_no_training_and_counts_no_attempt(env, target: str) -> None:
    """SIGTERM as a container runtime sends it (the main process) or as systemd and Ctrl-C do (the
    whole group, the training child too): the job is drained and put back; its next run completes
    with one version, its attempt row replaced, no attempt counted and nothing failed."""
    workers, db, settings = env
    await store(db, "reco", "recommendation", FinCoachSimulator(seed=10, n_users=50).recommendation_samples(200))
    job_id = await trigger(db, "reco", "recommendation")
    proc = workers.start(FCL_TRAINER_HYPERPARAMETERS=json.dumps(LONG_CQL), FCL_DRAIN_SECONDS="2")
    await _under_way(db, workers)
    if target == "process group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    job = (await rows(db, "SELECT status, attempts FROM training_jobs"))[0]
    assert (job.status, job.attempts) == ("queued", 0), workers.logs()
    await _completes_on_a_quick_worker(db, workers)
    assert await scalar(db, "SELECT attempts FROM training_jobs") == 1
    assert await scalar(db, "SELECT count(*) FROM model_versions") == 1
    outcomes = [(r.attempt, r.status) for r in await rows(db, "SELECT attempt, status FROM training_events")]
    assert outcomes == [(1, "completed")]
    events = await status_events(settings, lambda r: any(e["status"] == "completed" for e in r))
    assert transitions(events, job_id) == ["queued", "in_progress", "queued", "in_progress", "completed"]
    assert "ForeignKeyViolation" not in workers.logs()


async def test_auto_trigger_ready_queues_ready_datasets_by_the_admission_rules(env) -> None:
    from fcl.contract.enums import AdmissionOutcome

    async def auto_trigger_ready(db: Database, settings: Settings) -> list[Any]:
        async with db.transaction() as s:
            return await JobQueue(s).admit_ready(priority=settings.default_priority, source="http")

    _, db, settings = env
    async with db.transaction() as s:
        await SampleRepository(s).ingest(
            [
                NewSampleBatch(
                    event_id="b1",
                    dataset_id="ready",
                    model_type="goal",
                    samples=FinCoachSimulator(1, 30).goal_samples(),
                    occurred_at=None,
                ),
                NewSampleBatch(
                    event_id="b2",
                    dataset_id="not-yet",
                    model_type="goal",
                    samples=FinCoachSimulator(2, 5).goal_samples(),
                    occurred_at=None,
                ),
            ],
            thresholds={"goal": 50},
        )
    first = await auto_trigger_ready(db, settings)
    assert [(a.request.dataset_id, a.outcome) for a in first] == [("ready", AdmissionOutcome.CREATED)]
    # the dataset has a waiting job now: asking again admits nothing more (the one admission path
    # is idempotent), and one job with one `queued` event exists
    assert await auto_trigger_ready(db, settings) == []
    assert await scalar(db, "SELECT count(*) FROM training_jobs") == 1
    assert await scalar(db, "SELECT count(*) FROM outbox WHERE topic = 'training-status'") == 1


async def test_concurrent_candidates_move_the_champion_only_after_passing_against_the_then_champion(env) -> None:
    workers, db, _ = env
    for i in range(6):
        await store(db, f"seg-{i}", "segmentation", FinCoachSimulator(seed=20 + i, n_users=300).segmentation_samples())
        await trigger(db, f"seg-{i}", "segmentation")
    # two workers with two jobs each: up to four candidates of one type validated at once (a
    # longer lease: four trainings on this machine's CPUs can delay a heartbeat by seconds)
    workers.start(FCL_TRAINER_CONCURRENCY="2", FCL_LEASE_SECONDS="60")
    workers.start(FCL_TRAINER_CONCURRENCY="2", FCL_LEASE_SECONDS="60")
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 6 FROM training_jobs WHERE status = 'completed'"),
        timeout=180,
        logs=workers.logs,
        what="6 jobs completed",
    )
    assert await scalar(db, "SELECT count(DISTINCT lease_owner) FROM training_jobs") is not None
    ledger = await rows(db, "SELECT seq, version, previous_version FROM champion_ledger ORDER BY seq")
    assert ledger and ledger[0].previous_version is None
    for move in ledger:
        checks = await rows(
            db,
            """
            SELECT v.baseline_version, v.passed, v.metric, v.kind, v.value, v.baseline, v.threshold
            FROM validation_results v
            JOIN model_versions m ON m.training_event_id = v.training_event_id
            WHERE m.model_type = 'segmentation' AND m.version = :version""",
            version=move.version,
        )
        assert checks and all(c.passed for c in checks), (move, checks)
        assert {c.baseline_version for c in checks} == {move.previous_version}, move
    assert [m.previous_version for m in ledger[1:]] == [m.version for m in ledger[:-1]]
    async with db.transaction() as s:
        queue, training = await JobRepository(s).figures()
    assert [(q.model_type, q.status, q.jobs) for q in queue] == [("segmentation", "completed", 6)]
    assert {t.outcome: t.attempts for t in training}["completed"] == 6
    # A candidate overtaken again and again is validated anew each time, and after some rounds its
    # attempt ends as a (retriable) failure; nothing else may go wrong.
    errors = {
        r.error_type for r in await rows(db, "SELECT error_type FROM training_events WHERE status <> 'completed'")
    }
    assert errors <= {"ChampionChanged"}, errors
    assert all(t.seconds_total > 0 for t in training if t.outcome == "completed")
    long_way = {
        (r.model_type, r.status): (r.n, r.seconds)
        for r in await rows(
            db,
            "SELECT model_type, status, count(*) AS n, sum(duration_seconds) AS seconds "
            "FROM training_events GROUP BY 1, 2",
        )
    }
    assert {(t.model_type, t.outcome): t.attempts for t in training} == {k: n for k, (n, _) in long_way.items()}
    assert all(abs(t.seconds_total - long_way[(t.model_type, t.outcome)][1]) < 1e-6 for t in training)


async def test_a_champion_whose_artifact_is_gone_fails_closed(env) -> None:
    """The champion's file was deleted (a removed checkout, a wiped disk): the next candidate
    cannot be compared with it. It is trained and recorded as a version (the job completes, it
    does not fail forever), but it is NOT promoted: its verdict is champion_unreadable and says
    why, and the champion stays until an operator promotes by hand."""
    workers, db, settings = env
    # goal v1 is the champion; its artifact no longer exists
    v1 = await factories.record_version(
        db,
        "goal",
        passed=True,
        auc=0.9,
        dataset_id="goal-old",
        sha256="0" * 64,
        size=1,
        artifact_path=str(settings.artifact_dir / "goal" / "deleted.skops"),
    )
    assert (v1.model_version, v1.promoted) == (1, True)
    await store(db, "goal-new", "goal", FinCoachSimulator(seed=7, n_users=300).goal_samples())
    job = await trigger(db, "goal-new", "goal")
    workers.start()
    await eventually(
        lambda: scalar(db, "SELECT status = 'completed' FROM training_jobs WHERE id = :j", j=job),
        timeout=120,
        logs=workers.logs,
        what="the goal job completed",
    )
    assert await scalar(db, "SELECT attempts FROM training_jobs WHERE id = :j", j=job) == 1
    kinds = {
        r.kind
        for r in await rows(
            db,
            "SELECT v.kind FROM validation_results v JOIN model_versions m "
            "ON m.training_event_id = v.training_event_id WHERE m.version = 2",
        )
    }
    assert kinds == {"value"}  # no change checks: there was nothing loadable to compare with
    assert await scalar(db, "SELECT parent_version FROM model_versions WHERE version = 2") == 1
    verdict = (
        await rows(db, "SELECT verdict, verdict_message, promoted FROM training_events WHERE job_id = :j", j=job)
    )[0]
    assert verdict.verdict == "champion_unreadable" and "goal v1" in verdict.verdict_message and not verdict.promoted
    assert await scalar(db, "SELECT version FROM champion_ledger ORDER BY seq DESC LIMIT 1") == 1  # unchanged
    events = await status_events(
        settings, lambda r: any(e["job_id"] == str(job) and e["status"] == "completed" for e in r)
    )
    done = next(e for e in events if e["job_id"] == str(job) and e["status"] == "completed")
    assert "not promoted (champion_unreadable)" in done["message"] and "goal v1" in done["message"]
    validations = await read_topic(
        settings,
        Topic.TRAINING_VALIDATION.full_name(settings.topic_prefix),
        until=lambda r: any(e["job_id"] == str(job) for e in r),
        timeout=60,
    )
    judged = next(e for e in validations if e["job_id"] == str(job))
    assert judged["verdict"] == "champion_unreadable" and judged["promoted"] is False and "goal v1" in judged["message"]


async def test_a_candidate_judged_again_is_evaluated_from_its_artifact_not_fitted_again(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a training child does when the champion moved while its candidate was judged
    (`Mode.EVALUATE`): the stored candidate is loaded and judged against the new champion on the
    same samples; `fit` is never called, and the candidate's own metrics do not change."""
    from dataclasses import replace

    from fcl.storage.artifacts import ArtifactStore, S3Access
    from fcl.storage.entities import StoredArtifactRef
    from fcl.trainers.base import TrainRequest
    from fcl.trainers.goal import GoalTrainer
    from fcl.worker.child import train
    from fcl.worker.messages import Mode, TrainingTask

    _, db, settings = env
    sim = FinCoachSimulator(seed=31, n_users=300)
    await store(db, "goal-again", "goal", sim.goal_samples())
    watermark = await scalar(db, "SELECT max(id) FROM training_samples")
    task = TrainingTask(
        mode=Mode.FIT,
        database_url=settings.database_url,
        artifact_url=settings.artifact_location,
        s3=S3Access(),
        job_id=uuid.uuid4(),
        attempt=1,
        model_type="goal",
        dataset_id="goal-again",
        watermark=watermark,
        seed=3,
        hyperparameters={"n_estimators": 20},
        device="cpu",
        champion=None,
        champion_version=None,
    )
    first_outcome = await asyncio.to_thread(train, task, lambda message: None)
    first = first_outcome.candidate
    assert first.baseline_metrics is None and {c.kind.value for c in first.checks} == {"value"}

    # Meanwhile another candidate became the champion.
    rival = GoalTrainer().train(
        TrainRequest(
            samples=FinCoachSimulator(seed=32, n_users=300).goal_samples(), seed=9, hyperparameters={"n_estimators": 5}
        )
    )
    artifacts = ArtifactStore(settings.artifact_location)
    stored = artifacts.write(artifacts.key_for_job("goal", uuid.uuid4(), 1, "skops"), rival.artifact)
    champion = StoredArtifactRef(path=stored.path, sha256=stored.sha256, size=stored.size, format=stored.format)

    def no_second_fit(self: GoalTrainer, request: TrainRequest) -> Any:
        raise AssertionError("a candidate judged again must not be fitted again")

    monkeypatch.setattr(GoalTrainer, "fit", no_second_fit)
    again_outcome = await asyncio.to_thread(
        train,
        replace(
            task,
            mode=Mode.EVALUATE,
            candidate=first.artifact,
            hyperparameters=first.hyperparameters,
            fit_metrics=first_outcome.fit_metrics,
            fit_seconds=first.fit_seconds,
            champion=champion,
            champion_version=1,
        ),
        lambda message: None,
    )
    again = again_outcome.candidate
    # (the same to the last bits a parallel forest's summation order leaves open)
    assert again.metrics == pytest.approx(first.metrics, rel=1e-12) and again.fit_seconds == first.fit_seconds
    assert again.baseline_metrics is not None and set(again.baseline_metrics) >= {"roc_auc", "brier"}
    assert {c.kind.value for c in again.checks} == {"value", "change"}
    assert again.artifact.path == first.artifact.path


async def test_a_training_window_trains_on_the_most_recent_samples_and_the_version_records_it(env) -> None:
    workers, db, _ = env
    samples = FinCoachSimulator(3, 200).goal_samples()
    window = len(samples) // 2
    await store(db, "windowed", "goal", samples)
    job_id = await trigger(db, "windowed", "goal")
    workers.start(FCL_TRAIN_WINDOW_GOAL=str(window))

    async def ended() -> bool:
        status = await scalar(db, "SELECT status FROM training_jobs WHERE id = :id", id=job_id)
        return status in ("completed", "failed")

    await eventually(ended, timeout=120, what="the windowed job ended", logs=workers.logs)
    [version] = await rows(db, "SELECT metrics, dataset_watermark FROM model_versions")
    [event] = await rows(db, "SELECT sample_count FROM training_events WHERE job_id = :id", id=job_id)
    total = await scalar(db, "SELECT count(*) FROM training_samples WHERE dataset_id = 'windowed'")
    assert version.metrics["train_window"] == window < total and version.dataset_watermark >= total
    assert 0 < event.sample_count <= window  # the window, less any sample the trainer could not use


async def test_the_verdict_carries_drift_from_the_champions_data_and_a_configured_limit_gates_on_it(env) -> None:
    """Version 1 of goal has no champion and so no drift; version 2 trains on goals whose money
    amounts tripled and whose outcomes flipped: its validation (the row, the API's source, and the
    event on the broker) names that drift against version 1's data, and the worker's
    FCL_DRIFT_MAX_PSI turns it into a failing check. Each version's manifest info says which
    goal family won the search and every family's score."""
    workers, db, settings = env
    first = FinCoachSimulator(3, 200).goal_samples()
    await store(db, "goals-before", "goal", first)
    job1 = await trigger(db, "goals-before", "goal")
    workers.start(FCL_DRIFT_MAX_PSI="0.5")

    async def completed(job_id: uuid.UUID) -> bool:
        status = await scalar(db, "SELECT status FROM training_jobs WHERE id = :id", id=job_id)
        assert status != "failed", workers.logs()
        return status == "completed"

    await eventually(lambda: completed(job1), timeout=180, what="version 1 completed", logs=workers.logs)
    money = ("target_amount", "monthly_needed", "monthly_income", "monthly_spend")
    moved = [
        {
            **s,
            "achieved": not s["achieved"],
            "features": {k: v * 3 if k in money else v for k, v in s["features"].items()},
        }
        for s in FinCoachSimulator(4, 200).goal_samples()
    ]
    await store(db, "goals-after", "goal", moved)
    job2 = await trigger(db, "goals-after", "goal")
    await eventually(lambda: completed(job2), timeout=180, what="version 2 completed", logs=workers.logs)

    [v1, v2] = await rows(
        db,
        "SELECT version, info, profile, training_event_id, promoted FROM model_versions v "
        "JOIN training_events e ON e.id = v.training_event_id ORDER BY version",
    )
    for v in (v1, v2):
        assert v.info["family"] in v.info["cv_roc_auc"] and set(v.info["cv_roc_auc"]) == {
            "random_forest",
            "hist_gradient_boosting",
            "logistic_regression",
        }
        assert set(v.profile["features"]) == set(first[0]["features"])
    assert v1.promoted  # no champion: nothing to drift from, the limit's check is skipped
    drift1 = await scalar(db, "SELECT drift FROM training_events WHERE id = :id", id=v1.training_event_id)
    drift2 = await scalar(db, "SELECT drift FROM training_events WHERE id = :id", id=v2.training_event_id)
    assert drift1 is None
    assert drift2["reference_version"] == v1.version and set(drift2["psi"]) == set(first[0]["features"])
    assert min(drift2["psi"][k] for k in money) > 0.5 > max(drift2["psi"]["months"], drift2["psi"]["savings_rate"])
    assert drift2["psi_max"] == max(drift2["psi"].values()) and drift2["level"] == "major"
    rate_before = sum(s["achieved"] for s in first) / len(first)
    assert drift2["outcome"]["name"] == "achieved_rate"
    assert abs(drift2["outcome"]["champion"] - rate_before) < 1e-9
    assert abs(drift2["outcome"]["candidate"] - sum(s["achieved"] for s in moved) / len(moved)) < 1e-9
    [check] = await rows(
        db,
        "SELECT value, threshold, passed FROM validation_results WHERE training_event_id = :id "
        "AND metric = 'drift_psi_max'",
        id=v2.training_event_id,
    )
    assert (check.value, check.threshold, check.passed) == (drift2["psi_max"], 0.5, False) and not v2.promoted

    topic = Topic.TRAINING_VALIDATION.full_name(settings.topic_prefix)
    events = await read_topic(settings, topic, until=lambda r: len(r) >= 2, timeout=60)
    published = {e["candidate_version"]: e for e in events}
    assert published[v1.version]["drift"] is None and published[v2.version]["drift"] == drift2
    assert published[v2.version]["verdict"] == "failed" and "drift_psi_max" in published[v2.version]["message"]


async def test_no_dataset_can_take_the_champion_of_its_model_type(env) -> None:
    """The champion of goal answers for the whole model type. A second goal dataset whose outcomes
    are inverted scores well on its own held-out data (and the champion badly there), but it is
    also judged on the champion's reference set, where it regresses: refused, the reason named.
    A third, honest dataset that FCL_CHAMPION_DATASETS does not name is judged, never promoted."""
    workers, db, settings = env
    honest = FinCoachSimulator(3, 200).goal_samples()
    await store(db, "goals-main", "goal", honest)
    job1 = await trigger(db, "goals-main", "goal")
    workers.start(FCL_CHAMPION_DATASETS=json.dumps({"goal": ["goals-main", "goals-hostile"]}))

    async def completed(job_id: uuid.UUID) -> bool:
        status = await scalar(db, "SELECT status FROM training_jobs WHERE id = :id", id=job_id)
        assert status != "failed", workers.logs()
        return status == "completed"

    await eventually(lambda: completed(job1), timeout=180, what="version 1 completed", logs=workers.logs)
    # The champion's reference set is copied and its days go, as the retention does once they are
    # old: the judgements below read it from the copy.
    first = await scalar(db, "SELECT version FROM champion_ledger WHERE model_type = 'goal' ORDER BY seq DESC LIMIT 1")
    async with db.transaction() as s:
        [reference] = [n for n in await SampleRetention(s).needed({}) if n.champion == f"goal:{first}"]
        await SampleRetention(s).copy_reference(reference)
    gone = await rows(db, "DELETE FROM training_samples WHERE dataset_id = 'goals-main' RETURNING id")
    assert len(gone) == len(honest)
    inverted = [{**s, "achieved": not s["achieved"]} for s in FinCoachSimulator(4, 200).goal_samples()]
    await store(db, "goals-hostile", "goal", inverted)
    job2 = await trigger(db, "goals-hostile", "goal")
    await eventually(lambda: completed(job2), timeout=180, what="version 2 completed", logs=workers.logs)
    await store(db, "goals-outside", "goal", FinCoachSimulator(5, 200).goal_samples())
    job3 = await trigger(db, "goals-outside", "goal")
    await eventually(lambda: completed(job3), timeout=180, what="version 3 completed", logs=workers.logs)

    v1, v2, v3 = await rows(
        db,
        "SELECT v.version, v.dataset_id, e.id AS event_id, e.promoted, e.verdict, e.verdict_message "
        "FROM model_versions v JOIN training_events e ON e.id = v.training_event_id ORDER BY version",
    )
    assert (v1.dataset_id, v1.promoted) == ("goals-main", True)
    champion = await scalar(
        db, "SELECT version FROM champion_ledger WHERE model_type = 'goal' ORDER BY seq DESC LIMIT 1"
    )
    assert champion == v1.version

    checks2 = {
        r.metric: r
        for r in await rows(
            db,
            "SELECT metric, value, baseline, passed FROM validation_results WHERE training_event_id = :id",
            id=v2.event_id,
        )
    }
    # On its own held-out data the inverted candidate beats the champion: that alone would promote it.
    assert checks2["roc_auc"].passed and checks2["roc_auc"].value > 0.8
    # On the champion's reference set it falls far behind: refused, the reason named.
    reference = checks2["reference.roc_auc"]
    assert not reference.passed and reference.value < -0.5
    assert (v2.promoted, v2.verdict) == (False, "failed")
    assert "reference set" in v2.verdict_message and "goals-main" in v2.verdict_message

    checks3 = {
        r.metric: r
        for r in await rows(
            db, "SELECT metric, passed FROM validation_results WHERE training_event_id = :id", id=v3.event_id
        )
    }
    assert "reference.roc_auc" in checks3  # judged on the reference set too (honest data: whichever way it went)
    assert not checks3["champion_dataset_allowed"].passed
    assert (v3.promoted, v3.verdict) == (False, "failed") and "FCL_CHAMPION_DATASETS" in v3.verdict_message

    topic = Topic.TRAINING_VALIDATION.full_name(settings.topic_prefix)
    events = await read_topic(settings, topic, until=lambda r: len(r) >= 3, timeout=60)
    published = {e["candidate_version"]: e for e in events}
    assert not published[v2.version]["promoted"] and "reference set" in published[v2.version]["message"]
