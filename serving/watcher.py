"""The serving side: keep a model type's champion loaded, and swap in each new one.

`ChampionWatcher` follows the `model-versions` topic. On each event of its model type (and every
`resync_seconds`, in case an event was missed) it asks the API for the champion. When that is a
version it does not serve, it downloads the artifact from the API with the token, checks its
sha256 against the champion's record, loads it with the trainer's safe loader (safetensors, or
skops with an explicit list of trusted types; never pickle), and only then swaps it in: one
assignment, so a reader sees the old model or the new one, never a half-loaded one. A download or
load that fails keeps the old model serving and is retried on the next event or resync.

With `log_predictions=True` it also follows the model type's shadow challenger (`fcl versions
shadow`, read at start and on every event and resync): the challenger is loaded the same way, and
each `predict` hands the same records to it in the background (never on the caller's time); its
answers are logged as shadow predictions under the served ones' `prediction_id`s, and the live
evaluation compares the two on the same outcomes. Past `MAX_SHADOW_PENDING` batches waiting, the
oldest are dropped and counted.

    async with ChampionWatcher.from_settings("goal", load_settings()) as watcher:
        answers = watcher.predict([{"user_id": "u1", "goal_id": "g1", "features": {...}}])

`python -m fcl.serving MODEL_TYPE` (or `fcl serve MODEL_TYPE`) runs one
and prints a JSON line per swap.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import aiohttp
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fcl.contract.service import Service
from fcl.serving import predictions
from fcl.serving.predictions import PredictionLog

log = logging.getLogger("fcl.serving")  # the logger keeps its name: log filters are written against it
API = "/coaching/continuous-learning"
CHAMPION_READ_SECONDS = 30.0
MAX_CHAMPION_BYTES = 1 << 20  # a champion's record is a few KiB
MAX_ARTIFACT_BYTES = 4 << 30  # the default cap of one download
DOWNLOAD_BASE_SECONDS = 60.0
DOWNLOAD_MIN_BYTES_PER_SECOND = 1 << 20  # a download slower than 1 MiB/s on average is given up
MAX_SHADOW_PENDING = 1000  # batches of records waiting for the challenger


# Every watcher of this process, for the served-version gauges of its `/metrics` (the default
# prometheus_client registry the app serves).
WATCHERS: weakref.WeakSet[ChampionWatcher] = weakref.WeakSet()


class _ServedFigures:
    def collect(self) -> Iterator[Metric]:
        served = GaugeMetricFamily("fcl_served_version", "the version a watcher serves", labels=["model_type"])
        age = GaugeMetricFamily(
            "fcl_served_age_seconds", "how long ago the served version was loaded", labels=["model_type"]
        )
        dropped = CounterMetricFamily(
            "fcl_prediction_log_dropped", "predictions not logged: the queue was full", labels=["model_type"]
        )
        shadow = GaugeMetricFamily("fcl_shadow_version", "the challenger a watcher scores", labels=["model_type"])
        shadow_dropped = CounterMetricFamily(
            "fcl_shadow_dropped", "batches the challenger did not score: too many waited", labels=["model_type"]
        )
        shadow_failed = CounterMetricFamily(
            "fcl_shadow_failed", "batches the challenger refused or failed on", labels=["model_type"]
        )
        now = datetime.now(UTC)
        for w in list(WATCHERS):
            if w.served is not None:
                served.add_metric([w.model_type], w.served.version)
                age.add_metric([w.model_type], (now - w.served.loaded_at).total_seconds())
            if w.prediction_log is not None:
                dropped.add_metric([w.model_type], w.prediction_log.dropped)
            if w.shadow is not None:
                shadow.add_metric([w.model_type], w.shadow.version)
            shadow_dropped.add_metric([w.model_type], w.shadow_dropped)
            shadow_failed.add_metric([w.model_type], w.shadow_failed)
        yield from (served, age, dropped, shadow, shadow_dropped, shadow_failed)


REGISTRY.register(_ServedFigures())


class WatcherError(Exception):
    """The champion could not be fetched, checked or loaded (the old one keeps serving)."""


@dataclass(frozen=True, kw_only=True)
class Served:
    model_type: str
    version: int
    sha256: str
    model: Any  # what the model type's trainer `load`s: a torch module wrapper or a scikit-learn pipeline
    loaded_at: datetime
    cause: dict[str, Any] | None  # the model-versions event that led to it; None at start or on a resync


class ChampionWatcher(Service):
    name = "champion-watcher"
    grace = 3.0  # a poll of the topic takes at most a second

    def __init__(
        self,
        model_type: str,
        *,
        api_url: str,
        token: str | None,
        kafka_bootstrap: str,
        kafka_options: dict[str, Any] | None = None,
        topic_prefix: str = "fcl.",
        resync_seconds: float = 60.0,
        on_swap: Callable[[Served], None] | None = None,
        max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
        log_predictions: bool = False,
    ) -> None:
        from fcl.contract import model_types

        if model_types.parse(model_type) is None:
            raise ValueError(f"unknown model type {model_type!r}; known: {model_types.known()}")
        super().__init__()
        self.model_type = model_type
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_options = kafka_options or {}  # security: messaging.security.client_options
        self.topic = f"{topic_prefix}model-versions"
        self.resync_seconds = resync_seconds
        self.on_swap = on_swap
        self.max_artifact_bytes = max_artifact_bytes
        self.served: Served | None = None
        self.failures = 0
        self.prediction_log: PredictionLog | None = None
        if log_predictions:  # started by open()
            self.prediction_log = PredictionLog(
                topic=f"{topic_prefix}predictions", kafka_bootstrap=kafka_bootstrap, kafka_options=self.kafka_options
            )
        self.shadow: Served | None = None  # the challenger, scored beside the champion (log_predictions)
        self.shadow_scored = 0
        self.shadow_dropped = 0
        self.shadow_failed = 0
        # (challenger, records, the served events, predict's options)
        self._shadow_pending: collections.deque[tuple[Served, list[Any], list[dict[str, Any]], dict[str, Any]]] = (
            collections.deque()
        )
        self._shadow_wake = asyncio.Event()
        self._shadow_task: asyncio.Task[None] | None = None
        WATCHERS.add(self)
        self._http: aiohttp.ClientSession | None = None
        self._consumer: Any = None

    @classmethod
    def from_settings(
        cls, model_type: str, settings: Any, *, api_url: str | None = None, **kwargs: Any
    ) -> ChampionWatcher:
        from fcl.messaging.security import client_options

        return cls(
            model_type,
            api_url=api_url or f"http://{settings.http_host}:{settings.http_port}",
            token=settings.serve_token or settings.api_token,  # a serving app holds the serve token
            kafka_bootstrap=settings.kafka_bootstrap,
            kafka_options=client_options(settings),
            topic_prefix=settings.topic_prefix,
            **kwargs,
        )

    # -- life (contract.service.Service: `open()`, then `start()` runs `run()`; `stop()`) ----------
    async def open(self) -> None:
        """Subscribe first (from the end of the topic), then load the current champion: a change
        between the two is seen as an event, none is lost."""
        from aiokafka import AIOKafkaConsumer

        self._http = self._session()
        if self.prediction_log is not None:
            await self.prediction_log.start()
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.kafka_bootstrap,
            **self.kafka_options,
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            metadata_max_age_ms=5000,
        )
        await self._consumer.start()
        # The trainer's modules and the artifact loaders (seconds of imports) are loaded now, not
        # on the first swap.
        await asyncio.to_thread(_warm_up, self.model_type)
        # Wait for the assignment and take the current end positions before reading the champion.
        while not self._consumer.assignment():
            await self._consumer.getmany(timeout_ms=200)
        for partition in self._consumer.assignment():
            await self._consumer.position(partition)
        await self._refresh_quietly(None)
        if self.prediction_log is not None:
            self._shadow_task = asyncio.create_task(self._score_shadows(), name="fcl-shadow-scoring")

    async def run(self) -> None:
        """Follow the topic until stopped; an error of the consumer itself ends it (raises)."""
        assert self._consumer is not None, "open() first"
        next_resync = time.monotonic() + self.resync_seconds
        while not self.stopping:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    event = _event(record.value)
                    if event is not None and event.get("model_type") == self.model_type:
                        await self._refresh_quietly(event)
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.resync_seconds
                await self._refresh_quietly(None)

    async def stopped(self) -> None:
        if self._shadow_task is not None:
            self._shadow_task.cancel()
            try:
                await self._shadow_task
            except asyncio.CancelledError:
                pass
            self._shadow_task = None
        if self.prediction_log is not None:
            await self.prediction_log.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> Self:
        await self.open()
        self.start()
        return self

    # -- predictions ---------------------------------------------------------------------------------
    def predict(self, records: object, **options: Any) -> list[dict[str, Any]]:
        """The served champion's predictions for `records` (serving.predict: the contract's sample
        records without their outcome fields). WatcherError when no champion is served, or when
        the loop that keeps it current has died: an app never serves a stale model silently.
        InvalidRecords when the records are refused. With `log_predictions`, each answer has a
        `prediction_id` (the outcome's key) and is logged to `fcl.predictions` in the background."""
        from fcl.serving.predict import predictor

        task = self.task
        if task is not None and task.done() and not self.stopping:
            cause = task.exception() if not task.cancelled() else "cancelled"
            raise WatcherError(f"the {self.model_type} watcher's loop has died ({cause!r}): nothing is served")
        served = self.served
        if served is None:
            raise WatcherError(f"no {self.model_type} champion is served yet")
        answers = predictor(self.model_type, served.model).predict(records, **options)
        if self.prediction_log is not None:
            assert isinstance(records, (list, tuple))  # predict() refused anything else
            logged = predictions.events(self.model_type, served.version, records, answers)
            self.prediction_log.add(logged)
            challenger = self.shadow
            if challenger is not None and challenger.version != served.version and logged:
                if len(self._shadow_pending) >= MAX_SHADOW_PENDING:
                    self._shadow_pending.popleft()
                    self.shadow_dropped += 1
                self._shadow_pending.append((challenger, list(records), logged, options))
                self._shadow_wake.set()
        return answers

    async def _score_shadows(self) -> None:
        """The challenger's answers for what the champion answered, logged as shadow predictions;
        a batch it refuses or fails on is counted and logged, never raised."""
        assert self.prediction_log is not None
        while True:
            if not self._shadow_pending:
                self._shadow_wake.clear()
                await self._shadow_wake.wait()
                continue
            challenger, records, logged, options = self._shadow_pending.popleft()
            try:
                answers = await asyncio.to_thread(self._shadow_answers, challenger, records, options)
            except Exception as exc:  # noqa: BLE001 - the challenger refused the records, or failed on them
                self.shadow_failed += 1
                log.warning("%s shadow v%s did not score a batch: %s", self.model_type, challenger.version, exc)
                continue
            self.prediction_log.add(predictions.shadow_events(challenger.version, logged, answers))
            self.shadow_scored += len(logged)

    def _shadow_answers(self, challenger: Served, records: list[Any], options: dict[str, Any]) -> list[dict[str, Any]]:
        from fcl.serving.predict import predictor

        return predictor(self.model_type, challenger.model).predict(records, **options)

    def _session(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # no overall timeout: each request has its own (the champion's, and a download's by its size)
        return aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def load_champion(self) -> Served:
        """The API's champion, loaded once without following the topic (`fcl predict`); raises
        WatcherError when there is none or it cannot be fetched, checked or loaded."""
        opened = self._http is None
        if opened:
            self._http = self._session()
        try:
            await self.refresh()
        finally:
            if opened and self._http is not None:
                await self._http.close()
                self._http = None
        if self.served is None:
            raise WatcherError(f"no {self.model_type} champion: nothing to predict with")
        return self.served

    # -- the champion ------------------------------------------------------------------------------
    async def _refresh_quietly(self, cause: dict[str, Any] | None) -> None:
        try:
            await self.refresh(cause)
        except WatcherError as exc:
            self.failures += 1
            serving = self.served.version if self.served else None
            log.warning("%s champion not swapped, v%s keeps serving: %s", self.model_type, serving, exc)
        if self.prediction_log is None:
            return
        try:
            await self.refresh_shadow()
        except WatcherError as exc:
            self.failures += 1
            log.warning("%s shadow challenger not loaded: %s", self.model_type, exc)

    async def refresh_shadow(self) -> bool:
        """Score the API's shadow challenger (none: stop scoring one); True when one was loaded.
        Like the champion's: any answer ends in a load, False, or WatcherError with the reason."""
        assert self._http is not None, "start() first"
        base = f"{self.api_url}{API}/model-versions/{self.model_type}"
        try:
            body = await self._read_record(f"{base}/shadow?window=hour", "shadow")
            record = None if body is None else _shadow_record(body)
            if record is None:
                if self.shadow is not None:
                    log.info("%s: no shadow challenger any more (was v%s)", self.model_type, self.shadow.version)
                self.shadow = None
                return False
            version, sha256, size, fmt = record
            if size > self.max_artifact_bytes:
                raise WatcherError(f"v{version}'s artifact is {size} bytes, over the cap of {self.max_artifact_bytes}")
            if self.shadow is not None and (version, sha256) == (self.shadow.version, self.shadow.sha256):
                return False
            data = await self._download(f"{base}/{version}/artifact", version, size)
        except WatcherError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the API or the network: no challenger change
            raise WatcherError(f"the API at {self.api_url}: {exc!r}"[:500]) from None
        model = await self._checked_load(version, data, sha256, size, fmt)
        self.shadow = Served(
            model_type=self.model_type,
            version=version,
            sha256=sha256,
            model=model,
            loaded_at=datetime.now(UTC),
            cause=None,
        )
        log.info("%s: scoring v%s in the shadow (sha256 %s)", self.model_type, version, sha256[:12])
        return True

    async def _read_record(self, url: str, what: str) -> bytes | None:
        """A record the API answers (the champion's, the challenger's): its body, at most
        MAX_CHAMPION_BYTES, within CHAMPION_READ_SECONDS; None for 404; WatcherError otherwise."""
        assert self._http is not None
        async with asyncio.timeout(CHAMPION_READ_SECONDS):
            async with self._http.get(url) as r:
                if r.status == 404:
                    return None
                body = await _read_capped(r, MAX_CHAMPION_BYTES + 1)
                if r.status != 200:
                    raise WatcherError(f"GET {what} answered {r.status}: {body[:300]!r}")
        if len(body) > MAX_CHAMPION_BYTES:
            raise WatcherError(f"GET {what} answered more than {MAX_CHAMPION_BYTES} bytes")
        return body

    async def _checked_load(self, version: int, data: bytes, sha256: str, size: int, fmt: str) -> Any:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256 or len(data) != size:
            raise WatcherError(
                f"v{version}: downloaded {len(data)} bytes with sha256 {digest}, "
                f"the record says {size} bytes with {sha256}"
            )
        try:
            return await asyncio.to_thread(_load, self.model_type, data, fmt)
        except Exception as exc:  # noqa: BLE001 - any loader error keeps the old model serving
            raise WatcherError(f"v{version} could not be loaded: {exc}"[:500]) from None

    async def refresh(self, cause: dict[str, Any] | None = None) -> bool:
        """Serve the API's current champion; True when it was swapped in. Whatever the API answers
        (any shape, any size, any speed) ends in a swap, in False, or in WatcherError with the
        reason; the old model serves meanwhile."""
        assert self._http is not None, "start() first"
        base = f"{self.api_url}{API}/model-versions/{self.model_type}"
        try:
            body = await self._read_record(f"{base}/champion", "champion")
            if body is None:
                return False  # no champion yet
            version, sha256, size, fmt = _champion(body)
            if size > self.max_artifact_bytes:
                raise WatcherError(f"v{version}'s artifact is {size} bytes, over the cap of {self.max_artifact_bytes}")
            if self.served is not None and (version, sha256) == (self.served.version, self.served.sha256):
                return False
            data = await self._download(f"{base}/{version}/artifact", version, size)
        except WatcherError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the API or the network keeps the old model
            raise WatcherError(f"the API at {self.api_url}: {exc!r}"[:500]) from None
        model = await self._checked_load(version, data, sha256, size, fmt)
        served = Served(
            model_type=self.model_type,
            version=version,
            sha256=sha256,
            model=model,
            loaded_at=datetime.now(UTC),
            cause=cause,
        )
        self.served = served  # the swap: one assignment
        log.info("%s: serving v%s (sha256 %s)", self.model_type, version, sha256[:12])
        if self.on_swap is not None:
            self.on_swap(served)
        return True

    async def _download(self, url: str, version: int, size: int) -> bytes:
        """The artifact's bytes, no more than the record's `size`, within a time that grows with it
        (DOWNLOAD_MIN_BYTES_PER_SECOND): a slow or endless answer ends in WatcherError."""
        assert self._http is not None
        deadline = DOWNLOAD_BASE_SECONDS + size / DOWNLOAD_MIN_BYTES_PER_SECOND
        chunks, got = [], 0
        try:
            async with asyncio.timeout(deadline):
                async with self._http.get(url) as r:
                    if r.status != 200:
                        raise WatcherError(
                            f"GET artifact of v{version} answered {r.status}: {(await r.content.read(300))!r}"
                        )
                    async for chunk in r.content.iter_chunked(1 << 20):
                        got += len(chunk)
                        if got > size:
                            raise WatcherError(f"v{version}: the download passed the record's {size} bytes")
                        chunks.append(chunk)
        except TimeoutError:
            raise WatcherError(f"v{version}: {got} of {size} bytes after {deadline:.0f} s; given up") from None
        return b"".join(chunks)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, or its first `cap` bytes when it is longer."""
    chunks, got = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        chunks.append(chunk[: cap - got])
        got += len(chunks[-1])
        if got >= cap:
            break
    return b"".join(chunks)


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise WatcherError(f"GET {what} answered something that is not JSON: {body[:200]!r}") from None


def _champion(body: bytes) -> tuple[int, str, int, str]:
    """(version, sha256, size, format) of a champion answer, or WatcherError saying what is wrong."""
    answer = _json(body, "champion")
    try:
        return _record(answer["version"], answer["model"]["artifact"], "champion")
    except (KeyError, TypeError, IndexError):
        raise WatcherError(f"GET champion answered an unexpected document: {body[:200]!r}") from None


def _shadow_record(body: bytes) -> tuple[int, str, int, str] | None:
    """(version, sha256, size, format) of the challenger a shadow answer names (None: none), or
    WatcherError saying what is wrong."""
    answer = _json(body, "shadow")
    try:
        if answer["challenger"] is None:
            return None
        return _record(answer["challenger"], answer["model"]["artifact"], "shadow")
    except (KeyError, TypeError, IndexError):
        raise WatcherError(f"GET shadow answered an unexpected document: {body[:200]!r}") from None


def _record(version: Any, artifact: Any, what: str) -> tuple[int, str, int, str]:
    sha256, size, fmt = artifact["sha256"], artifact["size"], artifact["format"]
    if type(version) is not int or not 1 <= version < 2**31:
        raise WatcherError(f"GET {what} answered version {str(version)[:50]!r}, not a version number")
    if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise WatcherError(f"GET {what} answered sha256 {str(sha256)[:80]!r}, not a sha256")
    if type(size) is not int or size < 0:
        raise WatcherError(f"GET {what} answered size {str(size)[:50]!r}, not a byte count")
    if fmt not in ("skops", "safetensors"):
        raise WatcherError(f"GET {what} answered format {str(fmt)[:50]!r}, not one fcl writes")
    return version, sha256, size, fmt


def _event(value: bytes | None) -> dict[str, Any] | None:
    try:
        event = json.loads(value or b"")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        return None
    return event if isinstance(event, dict) else None


def _warm_up(model_type: str) -> None:
    import importlib

    _trainer(model_type)
    for module in ("skops.io", "safetensors.torch"):
        importlib.import_module(module)


def _trainer(model_type: str) -> Any:
    from fcl.trainers.registry import get_trainer

    return get_trainer(model_type)


def _load(model_type: str, data: bytes, fmt: str) -> Any:
    from fcl.contract.artifacts import Artifact

    return _trainer(model_type).load(Artifact(data=data, format=fmt))
