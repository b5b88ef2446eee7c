"""Raw Kafka records on the input topics, parsed and validated against the contract's events.

Every refusal comes back as a reason a person can act on, which goes to the dead-letter topic with
the raw event (`dead_letter`)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from contract import model_types
from contract.events import FCL_NAMESPACE, DatasetThresholdEvent, DeadLetterEvent, TrainingSamplesEvent, rfc3339

DEAD_LETTER_VALUE_BYTES = 64 * 1024

_SAMPLE_LISTS: dict[str, TypeAdapter[list[model_types.SampleShape]]] = {
    name: TypeAdapter(list[shape])  # type: ignore[valid-type]
    for name, shape in model_types.sample_shapes().items()
}


@dataclass(frozen=True, kw_only=True)
class RawMessage:
    """A Kafka record as it arrived, before any parsing."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, kw_only=True)
class Rejected:
    message: RawMessage
    reason: str


@dataclass(frozen=True, kw_only=True)
class ParsedSamples:
    message: RawMessage
    event: TrainingSamplesEvent
    model_type: str  # a registered model type
    samples: list[dict[str, Any]]  # validated, in the contract's shape


@dataclass(frozen=True, kw_only=True)
class ParsedThreshold:
    message: RawMessage
    event: DatasetThresholdEvent
    model_type: str  # a registered model type


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{where or 'event'}: {err['msg']}")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _load(message: RawMessage, max_bytes: int) -> dict[str, Any] | Rejected:
    value = message.value
    if value is None:
        return Rejected(message=message, reason="empty value (a tombstone), expected a JSON object")
    if len(value) > max_bytes:
        return Rejected(message=message, reason=f"event of {len(value)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejected(message=message, reason=f"not valid JSON: {exc}")
    except RecursionError:
        return Rejected(message=message, reason="not valid JSON: nested deeper than the parser reads")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return Rejected(message=message, reason=f"not valid JSON: {str(exc)[:200]}")
    if not isinstance(data, dict):
        return Rejected(message=message, reason=f"schema: expected a JSON object, got {type(data).__name__}")
    return data


def _model_type(message: RawMessage, data: dict[str, Any]) -> str | Rejected:
    raw = data.get("model_type")
    model_type = model_types.parse(raw)
    if model_type is None:
        return Rejected(message=message, reason=f"unknown model type {raw!r} (known: {model_types.known()})")
    return model_type


def parse_threshold(message: RawMessage, *, max_bytes: int) -> ParsedThreshold | Rejected:
    data = _load(message, max_bytes)
    if isinstance(data, Rejected):
        return data
    priority = data.get("priority", 5)
    if isinstance(priority, int) and not isinstance(priority, bool) and not 0 <= priority <= 9:
        return Rejected(message=message, reason=f"priority {priority} outside 0-9")
    try:
        event = DatasetThresholdEvent.model_validate(data)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc)}")
    model_type = _model_type(message, data)
    if isinstance(model_type, Rejected):
        return model_type
    return ParsedThreshold(message=message, event=event, model_type=model_type)


def parse_samples(message: RawMessage, *, max_bytes: int) -> ParsedSamples | Rejected:
    data = _load(message, max_bytes)
    if isinstance(data, Rejected):
        return data
    try:
        event = TrainingSamplesEvent.model_validate(data)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc)}")
    model_type = _model_type(message, data)
    if isinstance(model_type, Rejected):
        return model_type
    try:
        shaped = _SAMPLE_LISTS[model_type].validate_python(event.samples)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc, 'samples')} (a {model_type} sample)")
    samples = [s.model_dump(mode="json") for s in shaped]
    return ParsedSamples(message=message, event=event, model_type=model_type, samples=samples)


def dead_letter(rejected: Rejected) -> DeadLetterEvent:
    msg = rejected.message
    raw = (msg.value or b"")[:DEAD_LETTER_VALUE_BYTES]
    encoding: Literal["text", "base64"]
    try:
        value, encoding = raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetterEvent(
        event_id=str(uuid.uuid5(FCL_NAMESPACE, f"dead-letter:{msg.topic}:{msg.partition}:{msg.offset}")),
        source_topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key.decode("utf-8", errors="replace") if msg.key is not None else None,
        value=value,
        value_encoding=encoding,
        reason=rejected.reason,
        occurred_at=rfc3339(),
    )
