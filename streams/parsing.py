"""Raw Kafka records on the input topics, parsed and validated against the contract's events.

Every refusal comes back as a reason a person can act on, which goes to the dead-letter topic with
the raw event (`dead_letter`)."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from fcl.contract import limits, model_types
from fcl.contract.events import (
    FCL_NAMESPACE,
    DatasetThresholdEvent,
    DeadLetterEvent,
    OutcomeEvent,
    PredictionEvent,
    TrainingSamplesEvent,
    rfc3339,
)

log = logging.getLogger(__name__)
T = TypeVar("T", "ParsedThreshold", "ParsedSamples", "ParsedPrediction", "ParsedOutcome")


@dataclass(frozen=True, kw_only=True)
class RawMessage:
    """A Kafka record as it arrived, before any parsing."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    traceparent: str | None = None  # the record's W3C trace context header, when it has one


@dataclass(frozen=True, kw_only=True)
class Rejected:
    message: RawMessage
    reason: str


@dataclass(frozen=True, kw_only=True)
class ParsedSamples:
    message: RawMessage
    event: TrainingSamplesEvent
    model_type: str  # a registered model type
    samples: list[str]  # validated, each the JSON text of the sample in the contract's shape
    shape: dict[str, object]  # what the dataset's samples share (SampleShape.shape), {} for none


@dataclass(frozen=True, kw_only=True)
class ParsedThreshold:
    message: RawMessage
    event: DatasetThresholdEvent
    model_type: str  # a registered model type


@dataclass(frozen=True, kw_only=True)
class ParsedPrediction:
    message: RawMessage
    event: PredictionEvent
    model_type: str  # a registered model type
    inputs: str | None  # validated, the JSON text of the record or records in the input shape
    prediction: str  # validated, the JSON text of the prediction in the model type's shape


@dataclass(frozen=True, kw_only=True)
class ParsedOutcome:
    message: RawMessage
    event: OutcomeEvent
    outcome: str  # validated, the JSON text of the outcome in a model type's shape


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
        return Rejected(
            message=message, reason=f"event of {len(value)} bytes exceeds FCL_MAX_EVENT_BYTES ({max_bytes} bytes)"
        )
    try:
        limits.check_key(message.key)
        data = json.loads(value)
        limits.check_document(data, value)
    except limits.LimitExceeded as exc:
        return Rejected(message=message, reason=f"limit: {exc}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejected(message=message, reason=f"not valid JSON: {exc}")
    except RecursionError:
        return Rejected(message=message, reason=f"limit: nested deeper than MAX_DEPTH ({limits.MAX_DEPTH})")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return Rejected(message=message, reason=f"not valid JSON: {str(exc)[:200]} (number range)")
    if not isinstance(data, dict):
        return Rejected(message=message, reason=f"schema: expected a JSON object, got {type(data).__name__}")
    return data


def _model_type(message: RawMessage, data: dict[str, Any]) -> str | Rejected:
    raw = data.get("model_type")
    model_type = model_types.parse(raw)
    if model_type is None:
        return Rejected(message=message, reason=f"unknown model type {raw!r} (known: {model_types.known()})")
    return model_type


# The prefixes of the trigger ids fcl makes itself (`ready:` by the retraining sweep, `http:` by
# the API, `live:` by the live evaluation): a producer's event may not use them, so it cannot pre-empt one.
RESERVED_TRIGGER_PREFIXES = ("ready:", "http:", "live:")


def parse_threshold(message: RawMessage, *, max_bytes: int) -> ParsedThreshold | Rejected:
    """The event, or a refusal with its reason; never raises."""
    return _never_raising(_parse_threshold, message, max_bytes)


def parse_samples(message: RawMessage, *, max_bytes: int) -> ParsedSamples | Rejected:
    """The event with its validated samples, or a refusal with its reason; never raises."""
    return _never_raising(_parse_samples, message, max_bytes)


def parse_prediction(message: RawMessage, *, max_bytes: int) -> ParsedPrediction | Rejected:
    """The prediction with its validated inputs and answer, or a refusal with its reason."""
    return _never_raising(_parse_prediction, message, max_bytes)


def parse_outcome(message: RawMessage, *, max_bytes: int) -> ParsedOutcome | Rejected:
    """The outcome, validated against its model type's outcome shape (any type's, when the event
    names none), or a refusal with its reason."""
    return _never_raising(_parse_outcome, message, max_bytes)


def _never_raising(
    parse: Callable[[RawMessage, int], T | Rejected], message: RawMessage, max_bytes: int
) -> T | Rejected:
    try:
        return parse(message, max_bytes)
    except Exception as exc:  # a parser bug must not stop the agent: the event is dead-lettered
        log.exception("parsing a %s event failed", message.topic)
        return Rejected(message=message, reason=f"could not be parsed: {type(exc).__name__}: {exc}")


def _parse_threshold(message: RawMessage, max_bytes: int) -> ParsedThreshold | Rejected:
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
    if event.event_id.startswith(RESERVED_TRIGGER_PREFIXES):
        return Rejected(
            message=message,
            reason=f"event_id may not start with {' or '.join(map(repr, RESERVED_TRIGGER_PREFIXES))}: "
            "those ids are made by fcl itself",
        )
    model_type = _model_type(message, data)
    if isinstance(model_type, Rejected):
        return model_type
    return ParsedThreshold(message=message, event=event, model_type=model_type)


def _parse_samples(message: RawMessage, max_bytes: int) -> ParsedSamples | Rejected:
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
        shaped = model_types.sample_validators(model_type)[1].validate_python(event.samples)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc, 'samples')} (a {model_type} sample)")
    shape = shaped[0].shape()
    for i, sample in enumerate(shaped):
        if sample.shape() != shape:
            return Rejected(
                message=message,
                reason=f"samples.{i}: shape {_show(sample.shape())} differs from samples.0's {_show(shape)} "
                "(the samples of a dataset share one shape)",
            )
    samples = [s.__pydantic_serializer__.to_json(s).decode() for s in shaped]
    return ParsedSamples(message=message, event=event, model_type=model_type, samples=samples, shape=shape)


_INPUT_LISTS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(list[shape])  # type: ignore[valid-type]
    for name, shape in model_types.input_shapes().items()
}


def _as_json(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_as_json(v) for v in value) + "]"
    return str(value.__pydantic_serializer__.to_json(value).decode())


def _parse_prediction(message: RawMessage, max_bytes: int) -> ParsedPrediction | Rejected:
    data = _load(message, max_bytes)
    if isinstance(data, Rejected):
        return data
    try:
        event = PredictionEvent.model_validate(data)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc)}")
    model_type = _model_type(message, data)
    if isinstance(model_type, Rejected):
        return model_type
    spec = model_types.spec(model_type)
    try:
        prediction = spec.prediction.model_validate(event.prediction)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc, 'prediction')} (a {model_type} prediction)")
    inputs = None
    if event.inputs is not None:
        if isinstance(event.inputs, list) and not event.inputs:
            return Rejected(message=message, reason="schema: inputs: an empty list (leave inputs out instead)")
        try:
            if isinstance(event.inputs, list):
                inputs = _as_json(_INPUT_LISTS[model_type].validate_python(event.inputs))
            else:
                inputs = _as_json(spec.input.model_validate(event.inputs))
        except ValidationError as exc:
            return Rejected(message=message, reason=f"schema: {_describe(exc, 'inputs')} (a {model_type} input)")
    return ParsedPrediction(
        message=message, event=event, model_type=model_type, inputs=inputs, prediction=_as_json(prediction)
    )


def _parse_outcome(message: RawMessage, max_bytes: int) -> ParsedOutcome | Rejected:
    data = _load(message, max_bytes)
    if isinstance(data, Rejected):
        return data
    try:
        event = OutcomeEvent.model_validate(data)
    except ValidationError as exc:
        return Rejected(message=message, reason=f"schema: {_describe(exc)}")
    if event.model_type is not None:
        model_type = _model_type(message, data)
        if isinstance(model_type, Rejected):
            return model_type
        shape = model_types.spec(model_type).outcome
        if shape is None:
            return Rejected(message=message, reason=f"a {model_type} prediction has no outcome to report")
        try:
            return ParsedOutcome(message=message, event=event, outcome=_as_json(shape.model_validate(event.outcome)))
        except ValidationError as exc:
            return Rejected(message=message, reason=f"schema: {_describe(exc, 'outcome')} (a {model_type} outcome)")
    # Without a model type: the fields of every shape the outcome fits (the join finds its type).
    merged: dict[str, Any] = {}
    for spec in model_types.specs():
        if spec.outcome is None:
            continue
        try:
            merged |= spec.outcome.model_validate(event.outcome).model_dump(mode="json")
        except ValidationError:
            continue
    if merged:
        return ParsedOutcome(message=message, event=event, outcome=json.dumps(merged, separators=(",", ":")))
    shapes = ", ".join(
        f"{spec.name}: {' and '.join(spec.outcome.model_fields)}" for spec in model_types.specs() if spec.outcome
    )
    return Rejected(message=message, reason=f"schema: outcome: matches no model type's outcome ({shapes})")


def _show(shape: dict[str, object]) -> str:
    return limits.clip(json.dumps(shape), 300)


def dead_letter(rejected: Rejected) -> DeadLetterEvent:
    """The dead letter of a refused message, at most DEAD_LETTER_BYTES as JSON whatever the
    message: as much of the start of the value as fits (as text when it is UTF-8 without NUL,
    else base64), the key cut to MAX_ID_CHARS, the reason to MAX_MESSAGE_CHARS."""
    msg = rejected.message
    key = None
    if msg.key is not None:
        key = limits.clip(msg.key[: 4 * limits.MAX_ID_CHARS].decode("utf-8", errors="replace"), limits.MAX_ID_CHARS)
    budget = limits.DEAD_LETTER_BYTES - 8 * 1024  # room for the other fields (reason, key: bounded)
    raw = msg.value or b""
    while True:
        value, encoding = _as_text(raw, budget)
        letter = DeadLetterEvent(
            event_id=str(uuid.uuid5(FCL_NAMESPACE, f"dead-letter:{msg.topic}:{msg.partition}:{msg.offset}")),
            source_topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=key,
            value=value,
            value_encoding=encoding,
            reason=rejected.reason,
            occurred_at=rfc3339(),
        )
        size = len(letter.model_dump_json())
        if size <= limits.DEAD_LETTER_BYTES or budget == 0:
            return letter
        budget = max(0, budget - (size - limits.DEAD_LETTER_BYTES) - 1024)  # escapes made it longer


def _as_text(raw: bytes, budget: int) -> tuple[str, Literal["text", "base64"]]:
    """The first `budget` bytes of `raw` as text when they are UTF-8 without NUL (a character cut
    at the end is dropped), else base64 of as many bytes as keep within `budget`."""
    raw, whole = raw[:budget], raw
    for cut in range(4 if len(whole) > budget else 1):
        try:
            value = raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if "\x00" not in value:
            return value, "text"
        break
    return base64.b64encode(whole[: budget * 3 // 4]).decode("ascii"), "base64"
