"""Any bytes on an input topic come out of parsing as an event or as a refusal with a reason,
never as an exception (an exception there would stop the agent and every event after it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fcl.contract import limits
from fcl.streams.parsing import (
    ParsedSamples,
    ParsedThreshold,
    RawMessage,
    Rejected,
    dead_letter,
    parse_samples,
    parse_threshold,
)
from tests.poison import COMMON, SAMPLES, THRESHOLD, Poison

PARSERS = (parse_threshold, parse_samples)


def _raw(value: bytes | None) -> RawMessage:
    return RawMessage(topic="fcl.dataset-threshold", partition=0, offset=7, key=b"k", value=value)


def _outcome(value: bytes | None) -> list[object]:
    return [parse(_raw(value), max_bytes=1024 * 1024) for parse in PARSERS]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.none(), st.binary(max_size=2000)))
def test_arbitrary_bytes_are_parsed_or_refused_with_a_reason(value: bytes | None) -> None:
    for result in _outcome(value):
        assert isinstance(result, (ParsedThreshold, ParsedSamples, Rejected))
        if isinstance(result, Rejected):
            assert result.reason


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(["goal", "spending", "0001-01-01T00:00:00Z"]),
)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
FIELDS = ("event_id", "dataset_id", "model_type", "priority", "sample_count", "threshold", "occurred_at", "samples")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=len(FIELDS)))
def test_events_of_the_right_keys_with_any_values_are_parsed_or_refused(event: dict[str, Any]) -> None:
    for result in _outcome(json.dumps(event, allow_nan=True).encode()):
        assert isinstance(result, (ParsedThreshold, ParsedSamples, Rejected))


def test_hostile_documents_are_refused_with_a_reason() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    digits = b'{"event_id": "e", "dataset_id": "d", "model_type": "goal", "priority": ' + b"9" * 5000 + b"}"
    for value, reason in ((deep, "MAX_DEPTH"), (digits, "digits"), (b"\x00", "not valid JSON")):
        for result in _outcome(value):
            assert isinstance(result, Rejected) and reason in result.reason, (reason, result)


CORPUS = [(parse_threshold, p) for p in [*COMMON, *THRESHOLD]] + [(parse_samples, p) for p in [*COMMON, *SAMPLES]]


@pytest.mark.parametrize(("parse", "poison"), CORPUS, ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_each_hostile_value_is_refused_naming_its_limit(parse: Any, poison: Poison) -> None:
    message = RawMessage(topic="fcl.input", partition=0, offset=1, key=poison.key, value=poison.value)
    result = parse(message, max_bytes=1024 * 1024)
    assert isinstance(result, Rejected), result
    assert poison.reason in result.reason, result.reason
    assert len(dead_letter(result).model_dump_json().encode()) <= 64 * 1024


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300), st.binary(max_size=3000))
def test_any_key_and_value_make_a_bounded_dead_letter_or_an_event(key: bytes, value: bytes) -> None:
    for parse in PARSERS:
        result = parse(RawMessage(topic="t", partition=0, offset=0, key=key, value=value), max_bytes=1024 * 1024)
        if isinstance(result, Rejected):
            letter = dead_letter(result)
            assert len(letter.model_dump_json().encode()) <= 64 * 1024
            assert "\x00" not in letter.model_dump_json()


@example(b"[" * 100_000 + b"]" * 100_000)  # deeper than the JSON parser's recursion limit
@example(b"\xff\xfe")
@given(st.binary(max_size=4096) | st.none())
def test_the_watcher_reads_any_record_as_an_event_or_nothing(value: bytes | None) -> None:
    from fcl.serving.watcher import _event

    event = _event(value)
    assert event is None or isinstance(event, dict)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**17), max_value=10**17)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=60,
)


def _verdict(check: Any, *args: object) -> str | None:
    try:
        check(*args)
    except limits.LimitExceeded as exc:
        return str(exc)
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_JSON, st.integers(min_value=0, max_value=20), st.sampled_from(["", "\x00", "\ud800", "x" * 5000]))
@example(document=[1], depth=17, poison="")
@example(document={"a": True}, depth=0, poison="\ud800")
def test_the_fast_limit_check_refuses_exactly_what_the_path_naming_walk_refuses(
    document: object, depth: int, poison: str
) -> None:
    """check_document with the raw bytes (a walk without paths that skips string checks the bytes
    rule out) agrees with the walk that names the path, on any JSON document: nested deeper, with
    a NUL, a lone surrogate or a long string added, as text with escapes or raw bytes."""
    for _ in range(depth):
        document = [document]
    if poison:
        document = {"p": poison, "d": document}
    for raw in (
        json.dumps(document).encode(),
        json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ):
        parsed = json.loads(raw)
        reference = _verdict(limits._check_document_naming_the_path, parsed)
        assert _verdict(limits.check_document, parsed, raw) == reference
        assert _verdict(limits.check_document, parsed, None) == reference


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["ready:", "http:", "ready", "Ready:", "x-ready:", ""]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60),  # ids the limits let through
)
def test_an_id_of_the_kind_fcl_makes_is_refused_from_a_producer_and_any_other_is_not(prefix: str, rest: str) -> None:
    event_id = prefix + rest
    event = {"event_id": event_id, "dataset_id": "d", "model_type": "goal", "sample_count": 1, "threshold": 1}
    outcome = parse_threshold(_raw(json.dumps(event).encode()), max_bytes=1024 * 1024)
    if event_id.startswith(("ready:", "http:")):
        assert isinstance(outcome, Rejected) and "made by fcl itself" in outcome.reason
    else:
        assert not (isinstance(outcome, Rejected) and "made by fcl itself" in outcome.reason)
