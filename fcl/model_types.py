"""The model types fcl trains (CONTRACT.md, "Model types"). Anything else is unknown."""

from __future__ import annotations

import enum


class ModelType(enum.StrEnum):
    RECOMMENDATION = "recommendation"
    SEGMENTATION = "segmentation"
    SPENDING = "spending"
    GOAL = "goal"

    @classmethod
    def parse(cls, value: object) -> ModelType | None:
        try:
            return cls(str(value))
        except ValueError:
            return None


KNOWN = ", ".join(m.value for m in ModelType)


# The metric the dashboard plots across versions, and whether higher is better.
KEY_METRIC: dict[ModelType, tuple[str, bool]] = {
    ModelType.RECOMMENDATION: ("fqe_value", True),
    ModelType.SEGMENTATION: ("silhouette", True),
    ModelType.SPENDING: ("mae", False),
    ModelType.GOAL: ("roc_auc", True),
}
