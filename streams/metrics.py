"""The streams worker's own Prometheus figures (served on `FCL_METRICS_PORT`, `contract.probes`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

SAMPLES_STORED = Counter("fcl_samples_stored", "training samples stored (each once)")
ADMISSIONS = Counter("fcl_admissions", "training jobs created from threshold events")
PREDICTIONS_STORED = Counter("fcl_predictions_stored", "predictions recorded (each once)")
OUTCOMES = Counter(
    "fcl_outcomes", "outcomes by what became of them: joined with their prediction, waiting for it, repeated", ["kind"]
)
DEAD_LETTERS = Counter("fcl_dead_letters", "events dead-lettered, by the kind of refusal", ["kind"])


def refusal_kind(reason: str) -> str:
    """A dead letter's reason, reduced to a few kinds (a label must not grow without bound)."""
    if reason.startswith("limit:"):
        return "limit"
    if reason.startswith("event of "):
        return "size"
    if reason.startswith("not valid JSON"):
        return "json"
    if reason.startswith("empty value"):
        return "tombstone"
    return "schema"


class ConsumerLag:
    """`fcl_consumer_lag{topic, partition}` on each scrape: for every partition assigned to this
    worker, the records after the offset its group last committed (the partition's high
    watermark, as the last fetch saw it, less the committed offset). A partition this worker has
    not committed on yet is left out, not reported as zero."""

    def __init__(self) -> None:
        self._consumer: Callable[[], Any] | None = None  # the Faust app's consumer, looked up at scrape time

    def watch(self, consumer: Callable[[], Any]) -> None:
        self._consumer = consumer

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "fcl_consumer_lag",
            "records on an assigned partition after the offset this worker's group last committed",
            labels=["topic", "partition"],
        )
        try:
            assert self._consumer is not None
            consumer = self._consumer()
            committed = dict(consumer._committed_offset)  # Faust's: the next offset to read, per TP
            for tp in sorted(consumer.assignment()):
                done = committed.get(tp)
                if done is not None:
                    lag.add_metric([tp.topic, str(tp.partition)], max(0, consumer.highwater(tp) - done))
        except Exception:  # noqa: BLE001 - not started, or rebalancing: no figures this scrape
            pass
        yield lag


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)
