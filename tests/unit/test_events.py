"""Parsing input events (each refusal names its problem), building output events, and the JSON
Schemas in docs/schemas against the contract's examples."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from fcl.contract.enums import JobStatus
from fcl.contract.events import threshold_event_id
from fcl.contract.schemas import SCHEMA_DIR
from fcl.contract.schemas import main as schemas_main
from fcl.contract.topics import Topic
from fcl.storage.queue import status_event
from fcl.streams.parsing import RawMessage, Rejected, dead_letter, parse_samples, parse_threshold
from tests.fakes import new_job


def raw(value: bytes | None, key: bytes | None = b"k") -> RawMessage:
    return RawMessage(topic="fcl.dataset-threshold", partition=2, offset=41, key=key, value=value)


def validator(topic: Topic) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMA_DIR / f"{topic.value}.schema.json").read_text()))


THRESHOLD = {
    "event_id": "e1",
    "dataset_id": "fincoach-reco",
    "model_type": "recommendation",
    "sample_count": 5400,
    "threshold": 5000,
    "priority": 5,
    "occurred_at": "2026-01-13T09:30:00Z",
}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{nope", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"42", "expected a JSON object, got int"),
        (None, "empty value"),
        (json.dumps({**THRESHOLD, "model_type": "fraud"}).encode(), "unknown model type 'fraud'"),
        (
            json.dumps({k: v for k, v in THRESHOLD.items() if k != "model_type"}).encode(),
            "schema: model_type: Field required",
        ),
        (json.dumps({**THRESHOLD, "priority": 10}).encode(), "priority 10 outside 0-9"),
        (json.dumps({**THRESHOLD, "priority": -1}).encode(), "priority -1 outside 0-9"),
        (json.dumps({**THRESHOLD, "priority": "high"}).encode(), "schema: priority"),
        (json.dumps({**THRESHOLD, "dataset_id": ""}).encode(), "schema: dataset_id"),
        (json.dumps({**THRESHOLD, "padding": "x" * 2000}).encode(), "exceeds FCL_MAX_EVENT_BYTES (1024 bytes)"),
    ],
)
def test_threshold_refusals_name_the_problem(value: bytes | None, reason: str) -> None:
    result = parse_threshold(raw(value), max_bytes=1024)
    assert isinstance(result, Rejected)
    assert reason in result.reason


def test_threshold_accepts_the_contract_example_with_extra_fields_and_default_priority() -> None:
    event = {k: v for k, v in THRESHOLD.items() if k != "priority"} | {"producer": "backend-7"}
    result = parse_threshold(raw(json.dumps(event).encode()), max_bytes=1024)
    assert not isinstance(result, Rejected)
    assert result.event.priority == 5 and result.model_type == "recommendation"


SAMPLES: dict[str, dict[str, Any]] = {
    "recommendation": {
        "user_id": "u1",
        "episode_id": "ep1",
        "t": 3,
        "state": [0.1, 0.2],
        "action": 4,
        "reward": 1.5,
        "next_state": [0.2, 0.1],
        "done": False,
        "behavior_prob": 0.25,
    },
    "segmentation": {"user_id": "u1", "features": {"monthly_spend": 1200.0, "savings_rate": 0.1}},
    "spending": {"user_id": "u1", "date": "2026-01-13", "amount": 42.5},
    "goal": {"user_id": "u1", "goal_id": "g1", "features": {"target": 5000.0}, "achieved": True},
}


@pytest.mark.parametrize("model_type", list(SAMPLES))
def test_each_sample_shape_is_accepted_and_a_broken_one_refused(model_type: str) -> None:
    event = {
        "event_id": "s1",
        "dataset_id": f"fincoach-{model_type}",
        "model_type": model_type,
        "occurred_at": "2026-01-13T09:30:00Z",
        "samples": [SAMPLES[model_type], SAMPLES[model_type]],
    }
    ok = parse_samples(raw(json.dumps(event).encode()), max_bytes=10_000)
    assert not isinstance(ok, Rejected) and len(ok.samples) == 2
    assert not list(validator(Topic.TRAINING_SAMPLES).iter_errors(event))

    broken: dict[str, Any] = dict(SAMPLES[model_type])
    broken.pop("user_id")
    event["samples"] = [SAMPLES[model_type], broken]
    refused = parse_samples(raw(json.dumps(event).encode()), max_bytes=10_000)
    assert isinstance(refused, Rejected)
    assert "samples.1.user_id: Field required" in refused.reason and f"a {model_type} sample" in refused.reason
    assert list(validator(Topic.TRAINING_SAMPLES).iter_errors(event))


def test_samples_count_is_bounded_and_dates_must_be_real() -> None:
    base: dict[str, Any] = {"event_id": "s", "dataset_id": "d", "model_type": "spending"}
    empty = parse_samples(raw(json.dumps({**base, "samples": []}).encode()), max_bytes=10**7)
    assert isinstance(empty, Rejected) and "samples" in empty.reason
    many = parse_samples(raw(json.dumps({**base, "samples": [SAMPLES["spending"]] * 1001}).encode()), max_bytes=10**7)
    assert isinstance(many, Rejected) and "1000" in many.reason
    bad_day = parse_samples(
        raw(json.dumps({**base, "samples": [{**SAMPLES["spending"], "date": "2026-02-30"}]}).encode()), max_bytes=10**7
    )
    assert isinstance(bad_day, Rejected) and "samples.0.date" in bad_day.reason


def test_dead_letter_keeps_where_it_came_from_and_encodes_binary() -> None:
    text_letter = dead_letter(Rejected(message=raw(b"{nope"), reason="not valid JSON"))
    assert (text_letter.partition, text_letter.offset, text_letter.key) == (2, 41, "k")
    assert (text_letter.value, text_letter.value_encoding) == ("{nope", "text")
    binary = dead_letter(Rejected(message=raw(b"\xff\x00", key=None), reason="not valid JSON"))
    assert (binary.value, binary.value_encoding, binary.key) == ("/wA=", "base64", None)
    big = dead_letter(Rejected(message=raw(b"x" * 100_000, key=b"k" * 5000), reason="too big " * 5000))
    assert len(big.model_dump_json()) <= 64 * 1024 and big.value == "x" * len(big.value) and len(big.value) > 50_000
    assert len(big.reason) <= 2000 and big.key is not None and len(big.key) <= 256
    # Escapes cannot make it larger: control characters become six bytes each in JSON.
    escaped = dead_letter(Rejected(message=raw(b"\x01" * 100_000), reason="r"))
    assert escaped.value_encoding == "text" and len(escaped.model_dump_json()) <= 64 * 1024
    binary_big = dead_letter(Rejected(message=raw(bytes(range(256)) * 1000), reason="r"))
    assert binary_big.value_encoding == "base64" and len(binary_big.model_dump_json()) <= 64 * 1024
    # The same message dead-lettered twice (a redelivery) carries the same id.
    assert dead_letter(Rejected(message=raw(b"{nope"), reason="r")).event_id == text_letter.event_id
    assert not list(validator(Topic.DEAD_LETTER).iter_errors(text_letter.model_dump(mode="json")))


def test_threshold_event_ids_depend_on_dataset_and_crossing_only() -> None:
    assert threshold_event_id("d", 1) == threshold_event_id("d", 1)
    assert len({threshold_event_id("d", 1), threshold_event_id("d", 2), threshold_event_id("e", 1)}) == 3
    uuid.UUID(threshold_event_id("d", 1))


def test_schemas_on_disk_are_generated_from_the_models() -> None:
    assert schemas_main(["--check"]) == 0


CONTRACT_OUTPUT_EXAMPLES = {
    Topic.TRAINING_STATUS: {
        "event_id": "e",
        "job_id": "j",
        "dataset_id": "d",
        "model_type": "goal",
        "status": "failed",
        "priority": 5,
        "attempt": 1,
        "progress": 0.4,
        "message": "m",
        "error": {"type": "ValueError", "message": "bad"},
        "training_event_id": None,
        "model_version": None,
        "occurred_at": "2026-01-13T09:30:00Z",
    },
    Topic.TRAINING_VALIDATION: {
        "event_id": "e",
        "job_id": "j",
        "training_event_id": "t",
        "model_type": "goal",
        "candidate_version": 4,
        "baseline_version": 3,
        "metrics": {"roc_auc": 0.8},
        "baseline_metrics": {"roc_auc": 0.78},
        "checks": [
            {
                "metric": "roc_auc",
                "value": 0.8,
                "baseline": 0.78,
                "threshold": 0.0,
                "direction": "higher_is_better",
                "passed": True,
            }
        ],
        "passed": True,
        "promoted": True,
        "occurred_at": "2026-01-13T09:30:00Z",
    },
    Topic.MODEL_VERSIONS: {
        "event_id": "e",
        "model_type": "goal",
        "version": 4,
        "previous_version": 3,
        "reason": "rollback",
        "occurred_at": "2026-01-13T09:30:00Z",
    },
    Topic.DEAD_LETTER: {
        "event_id": "e",
        "source_topic": "fcl.training-samples",
        "partition": 0,
        "offset": 12,
        "key": None,
        "value": "{",
        "reason": "not valid JSON",
        "occurred_at": "2026-01-13T09:30:00Z",
    },
    Topic.DATASET_THRESHOLD: THRESHOLD,
}


@pytest.mark.parametrize("topic", list(CONTRACT_OUTPUT_EXAMPLES))
def test_contract_examples_validate_and_a_wrong_field_does_not(topic: Topic) -> None:
    example = CONTRACT_OUTPUT_EXAMPLES[topic]
    assert not list(validator(topic).iter_errors(example))
    broken = {k: v for k, v in example.items() if k != "event_id"}
    assert list(validator(topic).iter_errors(broken))


def test_a_status_event_is_the_contracts_and_names_its_job() -> None:
    job = new_job("d", "goal", priority=7)
    topic, key, status = status_event(job, JobStatus.QUEUED, attempt=job.attempts + 1, message="queued")
    assert (topic, key) == (Topic.TRAINING_STATUS, str(job.id))
    assert status["attempt"] == 1 and status["status"] == "queued" and status["occurred_at"].endswith("Z")
    assert not list(validator(Topic.TRAINING_STATUS).iter_errors(status))
    _, _, failed = status_event(job, JobStatus.FAILED, error=("ValueError", "bad"))
    assert failed["attempt"] == 1 and failed["error"] == {"type": "ValueError", "message": "bad"}
    assert not list(validator(Topic.TRAINING_STATUS).iter_errors(failed))
