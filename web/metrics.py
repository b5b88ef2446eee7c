"""`/metrics` in Prometheus text: HTTP latency histograms kept by this process, and the queue and
training figures read from PostgreSQL on each scrape (so every API process reports the same)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fcl.storage.entities import ModelFigure, OutboxFigure, QueueFigure, TrainingFigure

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Snapshot:
    """A collector over the figures of the scrape in progress."""

    def __init__(self) -> None:
        self.queue: Sequence[QueueFigure] = ()
        self.training: Sequence[TrainingFigure] = ()
        self.outbox = OutboxFigure(pending=0, parked=0)
        self.models: Sequence[ModelFigure] = ()
        self.live: Sequence[tuple[str, int, str, Mapping[str, Any]]] = ()  # (model type, version, window, figures)
        self.scrape_seconds = 0.0

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("fcl_queue_jobs", "jobs per model type and status", labels=["model_type", "status"])
        age = GaugeMetricFamily(
            "fcl_queue_oldest_age_seconds",
            "how long the oldest job in this state has been in it (queued: since created)",
            labels=["model_type", "status"],
        )
        for f in self.queue:
            jobs.add_metric([f.model_type, f.status], f.jobs)
            if f.status in ("queued", "in_progress") and f.oldest_age_seconds is not None:
                age.add_metric([f.model_type, f.status], f.oldest_age_seconds)
        attempts = CounterMetricFamily(
            "fcl_training_attempts", "training attempts by outcome", labels=["model_type", "outcome"]
        )
        seconds = CounterMetricFamily(
            "fcl_training_seconds", "seconds spent training, by outcome", labels=["model_type", "outcome"]
        )
        for t in self.training:
            attempts.add_metric([t.model_type, t.outcome], t.attempts)
            seconds.add_metric([t.model_type, t.outcome], t.seconds_total)
        pending = GaugeMetricFamily("fcl_outbox_pending", "events committed and not yet published")
        pending.add_metric([], self.outbox.pending)
        parked = GaugeMetricFamily(
            "fcl_outbox_parked", "events the relay parked after the broker refused them (GET .../outbox)"
        )
        parked.add_metric([], self.outbox.parked)
        champion = GaugeMetricFamily(
            "fcl_champion_version", "the serving version, per model type", labels=["model_type"]
        )
        champion_age = GaugeMetricFamily(
            "fcl_champion_age_seconds", "how long ago the serving version was recorded", labels=["model_type"]
        )
        psi = GaugeMetricFamily(
            "fcl_drift_psi_max",
            "the largest population stability index the latest candidate measured against the champion's data",
            labels=["model_type"],
        )
        for m in self.models:
            if m.champion_version is not None:
                champion.add_metric([m.model_type], m.champion_version)
            if m.champion_age_seconds is not None:
                champion_age.add_metric([m.model_type], m.champion_age_seconds)
            if m.drift_psi_max is not None:
                psi.add_metric([m.model_type], m.drift_psi_max)
        yield from self._live()
        scrape = GaugeMetricFamily("fcl_metrics_query_seconds", "time the database queries of this scrape took")
        scrape.add_metric([], self.scrape_seconds)
        yield from (jobs, age, attempts, seconds, pending, parked, champion, champion_age, psi, scrape)

    def _live(self) -> Iterator[Metric]:
        labels = ["model_type", "version", "window"]
        predictions = GaugeMetricFamily(
            "fcl_live_predictions", "predictions a version made in the window", labels=labels
        )
        share = GaugeMetricFamily("fcl_live_outcome_share", "the share of them whose outcome arrived", labels=labels)
        figure = GaugeMetricFamily(
            "fcl_live_metric", "a live figure of a served version (GET .../live)", labels=[*labels, "metric"]
        )
        drop = GaugeMetricFamily(
            "fcl_live_key_drop", "how far the live key metric fell short of the validated one, relative", labels=labels
        )
        psi = GaugeMetricFamily(
            "fcl_live_input_psi_max", "the largest PSI of the live inputs against the training data", labels=labels
        )
        for model_type, version, window, f in self.live:
            key = [model_type, str(version), window]
            predictions.add_metric(key, float(f.get("predictions") or 0))
            if isinstance(f.get("outcome_share"), (int, float)):
                share.add_metric(key, float(f["outcome_share"]))
            for name, value in (f.get("metrics") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    figure.add_metric([*key, name], float(value))
            if isinstance((f.get("key") or {}).get("drop"), (int, float)):
                drop.add_metric(key, float(f["key"]["drop"]))
            if isinstance((f.get("input_drift") or {}).get("psi_max"), (int, float)):
                psi.add_metric(key, float(f["input_drift"]["psi_max"]))
        yield from (predictions, share, figure, drop, psi)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = Histogram(
            "fcl_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.labels(method, route, str(status)).observe(seconds)

    def render(
        self,
        queue: Sequence[QueueFigure],
        training: Sequence[TrainingFigure],
        outbox: OutboxFigure,
        models: Sequence[ModelFigure] = (),
        live: Sequence[tuple[str, int, str, Mapping[str, Any]]] = (),
        *,
        scrape_seconds: float,
    ) -> bytes:
        self._snapshot.queue, self._snapshot.training, self._snapshot.outbox = queue, training, outbox
        self._snapshot.models, self._snapshot.live = models, live
        self._snapshot.scrape_seconds = scrape_seconds
        return generate_latest(self.registry)
