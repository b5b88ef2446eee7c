"""The contract's topic names (docs/contract.md, "Kafka topics"), without the configured prefix."""

from __future__ import annotations

import enum


class Topic(enum.StrEnum):
    TRAINING_SAMPLES = "training-samples"
    DATASET_THRESHOLD = "dataset-threshold"
    PREDICTIONS = "predictions"
    OUTCOMES = "outcomes"
    TRAINING_STATUS = "training-status"
    TRAINING_VALIDATION = "training-validation"
    MODEL_VERSIONS = "model-versions"
    DEAD_LETTER = "dead-letter"

    def full_name(self, prefix: str) -> str:
        return f"{prefix}{self.value}"


INPUT_TOPICS = (Topic.TRAINING_SAMPLES, Topic.DATASET_THRESHOLD, Topic.PREDICTIONS, Topic.OUTCOMES)
OUTPUT_TOPICS = (Topic.TRAINING_STATUS, Topic.TRAINING_VALIDATION, Topic.MODEL_VERSIONS, Topic.DEAD_LETTER)
