"""The trainer worker's own Prometheus figures (served on `FCL_METRICS_PORT`, `contract.probes`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOB_SECONDS = Histogram(
    "fcl_job_duration_seconds",
    "a job's run in this worker, from claim to its recorded end, by model type and outcome",
    ["model_type", "outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
VERDICTS = Counter("fcl_verdicts", "candidates judged, by model type and verdict", ["model_type", "verdict"])
CHILD_PEAK_RSS = Gauge(
    "fcl_training_child_peak_rss_bytes",
    "the largest resident set of the training child of the last job that answered, by model type",
    ["model_type"],
)
