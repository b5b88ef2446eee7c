"""JSON Schemas of every contract event, generated from contract.events and the model-type
registry, for producers and consumers in other languages. `python -m fcl.contract.schemas` rewrites
docs/schemas/; `python -m fcl.contract.schemas --check` fails when the files are out of date (a test
runs it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fcl.contract import model_types
from fcl.contract.events import (
    DatasetThresholdEvent,
    DeadLetterEvent,
    ModelVersionEvent,
    OutcomeEvent,
    PredictionEvent,
    TrainingSamplesEvent,
    TrainingStatusEvent,
    TrainingValidationEvent,
)
from fcl.contract.topics import Topic

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
MODELS: dict[Topic, type[BaseModel]] = {
    Topic.TRAINING_SAMPLES: TrainingSamplesEvent,
    Topic.DATASET_THRESHOLD: DatasetThresholdEvent,
    Topic.PREDICTIONS: PredictionEvent,
    Topic.OUTCOMES: OutcomeEvent,
    Topic.TRAINING_STATUS: TrainingStatusEvent,
    Topic.TRAINING_VALIDATION: TrainingValidationEvent,
    Topic.MODEL_VERSIONS: ModelVersionEvent,
    Topic.DEAD_LETTER: DeadLetterEvent,
}


def schema(topic: Topic) -> dict[str, Any]:
    doc = MODELS[topic].model_json_schema()
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"fcl/{topic.value}.schema.json",
        "title": f"fcl.{topic.value}",
        **{k: v for k, v in doc.items() if k != "title"},
    }
    if topic in (Topic.TRAINING_SAMPLES, Topic.DATASET_THRESHOLD, Topic.PREDICTIONS):
        doc["properties"]["model_type"] = {"enum": list(model_types.names()), "type": "string"}
    # Each model type's samples, predictions and outcomes have their own shape.
    if topic is Topic.TRAINING_SAMPLES:
        _by_model_type(doc, {"samples": lambda spec: {"items": _ref(doc, spec.sample)}})
    if topic is Topic.PREDICTIONS:
        _by_model_type(
            doc,
            {
                "prediction": lambda spec: _ref(doc, spec.prediction),
                "inputs": lambda spec: {
                    "anyOf": [_ref(doc, spec.input), {"items": _ref(doc, spec.input), "type": "array"}]
                },
            },
        )
    if topic is Topic.OUTCOMES:
        doc["properties"]["outcome"] = {
            "anyOf": [_ref(doc, spec.outcome) for spec in model_types.specs() if spec.outcome is not None]
        }
    return doc


def _ref(doc: dict[str, Any], shape: type[BaseModel]) -> dict[str, str]:
    doc.setdefault("$defs", {})[shape.__name__] = shape.model_json_schema(ref_template="#/$defs/{model}")
    for name, sub in doc["$defs"][shape.__name__].pop("$defs", {}).items():
        doc["$defs"][name] = sub
    return {"$ref": f"#/$defs/{shape.__name__}"}


def _by_model_type(doc: dict[str, Any], fields: dict[str, Any]) -> None:
    doc["allOf"] = [
        {
            "if": {"properties": {"model_type": {"const": spec.name}}},
            "then": {"properties": {name: make(spec) for name, make in fields.items()}},
        }
        for spec in model_types.specs()
    ]


def render(topic: Topic) -> str:
    return json.dumps(schema(topic), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when docs/schemas is out of date")
    args = parser.parse_args(argv)
    stale = []
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for topic in MODELS:
        path = SCHEMA_DIR / f"{topic.value}.schema.json"
        text = render(topic)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m fcl.contract.schemas", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
