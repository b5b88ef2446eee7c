"""The streams worker's own Prometheus figures (served on `FCL_METRICS_PORT`, `contract.probes`)."""

from __future__ import annotations

from prometheus_client import Counter

SAMPLES_STORED = Counter("fcl_samples_stored", "training samples stored (each once)")
ADMISSIONS = Counter("fcl_admissions", "training jobs created from threshold events")
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
