"""Hostile values for the input topics, each with the words its dead letter's reason must hold.

The unit tests parse each; the integration test sends each, followed by a valid event with the
same key, through a real broker to a real streams worker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fcl.contract import limits


@dataclass(frozen=True)
class Poison:
    name: str
    key: bytes | None
    value: bytes | None
    reason: str  # a part of the dead letter's reason


def _threshold(**fields: Any) -> dict[str, Any]:
    return {"event_id": "poison", "dataset_id": "poison-ds", "model_type": "goal", **fields}


def _goal_samples(samples: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"event_id": "poison", "dataset_id": "poison-ds", "model_type": "goal", "samples": samples, **fields}


def _goal(**fields: Any) -> dict[str, Any]:
    return {"user_id": "u", "goal_id": "g", "features": {"a": 1.0}, "achieved": True, **fields}


def _reco(**fields: Any) -> dict[str, Any]:
    return {
        "user_id": "u",
        "episode_id": "e",
        "t": 0,
        "state": [0.1, 0.2],
        "action": 1,
        "reward": 1.0,
        "next_state": [0.2, 0.3],
        "done": False,
        **fields,
    }


def _j(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


# Values hostile to either input topic (they fail before the event's own fields are read).
COMMON: list[Poison] = [
    Poison("nul byte", b"k", b"\x00", "not valid JSON"),
    Poison("tombstone", b"k", None, "tombstone"),
    Poison("not utf-8", b"k", b"\xff\xfe{", "not valid JSON"),
    Poison("deep nesting", b"k", b"[" * 100_000 + b"]" * 100_000, "MAX_DEPTH"),
    Poison("nesting over the limit", b"k", _j(_threshold(extra=[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]])), "MAX_DEPTH"),
    Poison("thousands of digits", b"k", b'{"priority": ' + b"9" * 5000 + b"}", "number range"),
    Poison("huge integer", b"k", _j(_threshold(sample_count=10**20)), "MAX_NUMBER"),
    Poison("NaN", b"k", _j(_threshold(sample_count=float("nan"))), "not finite"),
    Poison("Infinity", b"k", b'{"x": Infinity}', "not finite"),
    Poison("float overflow", b"k", b'{"x": 1e400}', "not finite"),
    Poison("NUL in a string", b"k", _j(_threshold(dataset_id="a\x00b")), "NUL"),
    Poison("lone surrogate", b"k", b'{"dataset_id": "\\ud800"}', "surrogate"),
    # json.loads decodes bytes with surrogatepass: these three bytes are a lone surrogate too, with
    # no escape in sight (contract.limits.check_document must not skip them).
    Poison("lone surrogate as raw bytes", b"k", b'{"dataset_id": "a\xed\xa0\x80b"}', "surrogate"),
    Poison("long string", b"k", _j(_threshold(note="x" * (limits.MAX_STRING_CHARS + 1))), "MAX_STRING_CHARS"),
    Poison("long key", b"k" * 300, _j(_threshold()), "MAX_ID_CHARS"),
    Poison("key not utf-8", b"\xff\xfe", _j(_threshold()), "key is not UTF-8"),
    Poison("key with NUL", b"a\x00b", _j(_threshold()), "key holds NUL"),
    Poison("array, not object", b"k", b"[1, 2]", "expected a JSON object"),
    Poison("control characters", b"k", b"\x01\x02\x1b[31m" * 1000, "not valid JSON"),
]

THRESHOLD: list[Poison] = [
    Poison("year 0001 with offset", b"k", _j(_threshold(occurred_at="0001-01-01T00:00:00+23:59")), "timestamp range"),
    Poison("year 9999 with offset", b"k", _j(_threshold(occurred_at="9999-12-31T23:59:59-23:59")), "timestamp range"),
    Poison("year 1900", b"k", _j(_threshold(occurred_at="1900-01-01T00:00:00Z")), "timestamp range"),
    Poison("long dataset id", b"k", _j(_threshold(dataset_id="d" * 300)), "dataset_id"),
    Poison("unknown model type", b"k", _j(_threshold(model_type="x\u202e")), "unknown model type"),
    Poison("priority out of range", b"k", _j(_threshold(priority=99)), "outside 0-9"),
]

SAMPLES: list[Poison] = [
    Poison("1001 samples", b"k", _j(_goal_samples([_goal()] * 1001)), "1000"),
    Poison(
        "sample date year 0001",
        b"k",
        _j(
            {
                **_goal_samples([]),
                "model_type": "spending",
                "samples": [{"user_id": "u", "date": "0001-01-01", "amount": 1.0}],
            }
        ),
        "timestamp range",
    ),
    Poison("feature beyond range", b"k", _j(_goal_samples([_goal(features={"a": 1e300})])), "MAX_NUMBER"),
    Poison("too many features", b"k", _j(_goal_samples([_goal(features={f"f{i}": 1.0 for i in range(300)})])), "256"),
    Poison(
        "action out of range",
        b"k",
        _j({**_goal_samples([_reco(action=10**6)]), "model_type": "recommendation"}),
        "samples.0.action",
    ),
    Poison(
        "state too long",
        b"k",
        _j({**_goal_samples([_reco(state=[0.0] * 2000)]), "model_type": "recommendation"}),
        "samples.0.state",
    ),
    Poison(
        "mixed state lengths",
        b"k",
        _j({**_goal_samples([_reco(), _reco(state=[0.0] * 3, next_state=[0.0] * 3)]), "model_type": "recommendation"}),
        "shape",
    ),
    Poison(
        "next_state of another length",
        b"k",
        _j({**_goal_samples([_reco(next_state=[0.0] * 5)]), "model_type": "recommendation"}),
        "next_state has 5 values",
    ),
    Poison("mixed feature names", b"k", _j(_goal_samples([_goal(), _goal(features={"b": 1.0})])), "shape"),
    Poison(
        "occurred_at year 9999",
        b"k",
        _j(_goal_samples([_goal()], occurred_at="9999-12-31T23:59:59-23:59")),
        "timestamp range",
    ),
]
