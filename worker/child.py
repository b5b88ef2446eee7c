"""What runs in a training child process: load the samples, fit a candidate (or load the one fitted
before), judge it and the champion on the same held-out data, write its artifact, and answer with
typed messages (`worker.messages`). Everything the child hits is answered, never lost: a
`TrainingError` with its own `retriable`, anything else as retriable."""

from __future__ import annotations

import asyncio
import math
import resource
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import joblib
import numpy as np

from fcl.storage.artifacts import ArtifactError, ArtifactStore, StoredArtifact
from fcl.storage.entities import Candidate, StoredArtifactRef
from fcl.storage.stores import load_samples
from fcl.trainers import judging, usable
from fcl.trainers.base import Artifact, Trainer, TrainingError, TrainRequest
from fcl.trainers.manifest import build_manifest, code_version, library_versions
from fcl.trainers.registry import get_trainer
from fcl.trainers.usable import usable_samples
from fcl.worker.messages import ChildMessage, Failure, Mode, Outcome, Progress, TrainingTask

# Computed once in the fork server (which imports this module), inherited by every child.
library_versions()
code_version()
usable.prepare()


def _finite(metrics: dict[str, Any] | None) -> dict[str, float] | None:
    if metrics is None:
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def jsonable(value: Any) -> Any:
    """`value` as JSON PostgreSQL accepts: numpy scalars as numbers, tuples as lists, non-finite
    numbers as null, anything else unknown as its text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _stored(ref: StoredArtifactRef) -> StoredArtifact:
    return StoredArtifact(path=ref.path, sha256=ref.sha256, size=ref.size, format=ref.format)


def _on_the_champions_reference(
    task: TrainingTask, trainer: Trainer, model: Any, request: TrainRequest, hyperparameters: dict[str, Any]
) -> tuple[judging.Reference | None, str | None]:
    """The candidate and the champion on the champion's reference set, when the champion was
    judged on another dataset (None, None when there is nothing to do); the error when the
    reference set cannot be read or judged (the candidate then is not promoted by itself)."""
    if request.champion is None or task.champion_dataset_id in (None, task.dataset_id):
        return None, None
    assert task.champion_dataset_id is not None and task.champion_watermark is not None
    where = f"dataset {task.champion_dataset_id!r} up to sample {task.champion_watermark}"
    try:
        loaded = asyncio.run(
            load_samples(
                task.database_url,
                task.champion_dataset_id,
                up_to=task.champion_watermark,
                window=task.champion_window,
                after=task.champion_after,
                champion=f"{task.model_type}:{task.champion_version}",
            )
        )
        samples, _ = usable_samples(task.model_type, loaded)
        del loaded
        evaluation = trainer.assess(model, replace(request, samples=samples, hyperparameters=hyperparameters))
    except TrainingError as exc:
        return None, f"the champion's reference set ({where}) cannot be judged: {exc}"
    return judging.Reference(where=where, evaluation=evaluation), None


# The waits between reads of the champion's artifact: a store that blinks (a restart, a timeout)
# must not cost the candidate its comparison, and so its promotion.
CHAMPION_READ_WAITS = (0.5, 1.0, 2.0, 4.0)


def _read_with_retries(
    store: ArtifactStore, stored: StoredArtifact, waits: tuple[float, ...] = CHAMPION_READ_WAITS
) -> Artifact:
    """The artifact, read again after each wait while reading fails; the last error when it never
    could be read."""
    for wait in waits:
        try:
            return store.read(stored)
        except (ArtifactError, OSError):
            time.sleep(wait)
    return store.read(stored)


class Steps:
    """Where a training child's time went, step by step (recorded with the version, in its
    manifest's `child_seconds`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 4)
        self._last = now


def train(task: TrainingTask, send: Any) -> Outcome:
    """Do the task; `send(message)` reports progress. Raises what the training raised."""
    steps = Steps()
    store = ArtifactStore(task.artifact_url, task.s3)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcl-champion-read") as reader:
        # The champion's artifact is read from the store while the samples come from the database.
        reading = reader.submit(_read_with_retries, store, _stored(task.champion)) if task.champion else None
        loaded = asyncio.run(
            load_samples(task.database_url, task.dataset_id, up_to=task.watermark, window=task.window, after=task.after)
        )
        samples, skipped = usable_samples(task.model_type, loaded)
        del loaded
        champion: Artifact | None = None
        unreadable = None
        if reading is not None:
            try:
                champion = reading.result()
            except (ArtifactError, OSError) as exc:
                # A champion that cannot be loaded cannot be compared: the candidate is recorded
                # and judged on its fixed bounds for information, but is not promoted (fail closed).
                unreadable = (
                    f"the artifact of champion {task.model_type} v{task.champion_version} cannot be read ({exc})"
                )
    steps.done("load")
    trainer = get_trainer(task.model_type)
    last = [0.0, time.monotonic()]

    def progress(fraction: float) -> None:  # at most every 2 % or every second
        if fraction - last[0] >= 0.02 or fraction >= 1.0 or time.monotonic() - last[1] >= 1.0:
            last[0], last[1] = fraction, time.monotonic()
            send(Progress(fraction=float(fraction)))

    request = TrainRequest(
        samples=samples,
        seed=task.seed,
        hyperparameters=task.hyperparameters,
        champion=champion,
        progress=progress,
        device=task.device,
    )
    started = time.perf_counter()
    if task.mode is Mode.FIT:
        fitted = trainer.fit(request)
        fit_metrics, hyperparameters, model, info = fitted.metrics, fitted.hyperparameters, fitted.model, fitted.info
    else:
        assert task.candidate is not None
        model = trainer.load(store.read(_stored(task.candidate)))
        fit_metrics, hyperparameters, info = task.fit_metrics, task.hyperparameters, task.fit_info
    steps.done("fit" if task.mode is Mode.FIT else "read_candidate")
    evaluation = trainer.assess(model, replace(request, hyperparameters=hyperparameters))
    steps.done("evaluate")
    metrics = _finite(evaluation.metrics | fit_metrics) or {}
    if skipped:
        metrics["skipped_samples"] = float(skipped)  # recorded with the version (its manifest)
    if task.window is not None:
        metrics["train_window"] = float(task.window)  # trained on the most recent N samples only
    baseline = _finite(evaluation.baseline_metrics)
    reference, reference_error = _on_the_champions_reference(task, trainer, model, request, hyperparameters)
    judged = judging.judge(
        trainer,
        samples,
        evaluation,
        fit_metrics,
        champion_profile=task.champion_profile,
        champion_version=task.champion_version,
        champion_unreadable=unreadable,
        drift_max_psi=task.drift_max_psi,
        reference=reference,
        reference_error=reference_error,
        may_promote=task.may_promote,
        dataset_id=task.dataset_id,
    )
    steps.done("judge")
    artifact = trainer.artifact(evaluation.model)
    steps.done("serialize")
    # The trainer's own time, as `fit_seconds` has always meant: fit, evaluation and serialization
    # (`Trainer.train`); a candidate judged again keeps the time of the training that made it.
    fit_seconds = time.perf_counter() - started if task.mode is Mode.FIT else task.fit_seconds
    stored = store.write(store.key_for_job(task.model_type, task.job_id, task.attempt, artifact.format), artifact)
    steps.done("write")
    manifest = build_manifest(
        model_type=task.model_type,
        seed=task.seed,
        hyperparameters=hyperparameters,
        samples=samples,
        dataset_watermark=task.watermark,
        info=info
        | evaluation.info
        | {
            "skipped_samples": skipped,
            "train_window": task.window,
            "shape_version": task.shape_version,
            "shape_from_id": task.after,
        },
    )
    if judged.drift_error:
        manifest.info["drift_error"] = judged.drift_error
    steps.done("manifest")
    manifest.info["child_seconds"] = steps.seconds
    return Outcome(
        fit_metrics=_finite(fit_metrics) or {},
        fit_info=jsonable(info),
        candidate=Candidate(
            metrics=metrics,
            baseline_metrics=baseline,
            checks=tuple(judged.gate.checks),
            passed=judged.gate.passed,
            hyperparameters=hyperparameters,
            artifact=StoredArtifactRef(path=stored.path, sha256=stored.sha256, size=stored.size, format=stored.format),
            fit_seconds=fit_seconds,
            sample_count=len(samples),
            dataset_hash=manifest.dataset_hash,
            seed=manifest.seed,
            library_versions=manifest.library_versions,
            code_version=manifest.code_version,
            verdict=judged.verdict,
            verdict_message=judged.message,
            info=jsonable(manifest.info),
            profile=judged.profile,
            drift=judged.drift,
        ),
    )


def parallelism() -> Any:
    """How a training child runs scikit-learn's parallel loops. The child is a daemon process, and
    joblib's default backend (loky) then refuses to run in parallel ("setting n_jobs=1"), which
    left the Random Forest on one core; threads (what scikit-learn's forests use anyway) may use
    every core the worker has."""
    return joblib.parallel_config(backend="threading")


def peak_rss_bytes() -> int:
    """This process's largest resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_main(conn: Any, task: TrainingTask) -> None:
    """The child process's entry point: answers on `conn`, then closes it. It leaves SIGTERM and
    SIGINT to its parent (a signal to the whole process group, as systemd and Ctrl-C send, must
    not end a training the draining worker would still let finish); the parent kills it when
    it has to."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(message: ChildMessage) -> None:
        conn.send(message)

    try:
        with parallelism():
            outcome = train(task, send)
        send(replace(outcome, peak_rss_bytes=peak_rss_bytes()))
    except TrainingError as exc:
        send(Failure(type=type(exc).__name__, message=str(exc), retriable=exc.retriable))
    except BaseException as exc:  # noqa: BLE001 - everything the child hits is reported, never lost
        try:
            send(Failure(type=type(exc).__name__, message=str(exc) or repr(exc), retriable=True))
        except Exception:  # noqa: BLE001 - the parent sees the pipe close and reports the exit
            pass
    finally:
        conn.close()
