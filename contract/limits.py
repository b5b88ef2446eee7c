"""The input limits (docs/contract.md, "Input limits"), each with the name a refusal quotes.

Everything on an input topic is checked against these before anything is stored, so no value,
however long, deep, large or strange, can reach PostgreSQL, a trainer or the producer in a form
that breaks them. An event over a limit is dead-lettered with the limit named in its reason.
Output payloads are bounded too: a dead letter is at most `DEAD_LETTER_BYTES` (64 KiB) with as
much of the raw value as fits, and reasons and error messages are cut to `MAX_MESSAGE_CHARS`.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any, Final

# The event (FCL_MAX_EVENT_BYTES, 1 MiB by default, is a setting; the rest are fixed).
MAX_DEPTH: Final = 16  # nesting of objects and arrays (a sample is 3 deep inside its event)
MAX_STRING_CHARS: Final = 4096  # any string value or object key
MAX_ID_CHARS: Final = 256  # event, dataset, user, episode and goal ids; Kafka keys
MAX_NUMBER: Final = 1e15  # |x| of any number; integers beyond it are refused too
MIN_YEAR: Final = 1970  # timestamps and dates: from 1970-01-01 ...
MAX_YEAR: Final = 2099  # ... to 2099-12-31
MAX_SAMPLES_PER_EVENT: Final = 1000
# Sample shapes.
MAX_STATE_LENGTH: Final = 1024  # values in a recommendation state
MAX_ACTIONS: Final = 256  # recommendation actions are 0 .. MAX_ACTIONS - 1
MAX_FEATURES: Final = 256  # entries of a segmentation or goal sample's features
MAX_STEP: Final = 10**9  # a transition's t

# Outputs.
DEAD_LETTER_BYTES: Final = 64 * 1024  # a whole dead letter, as JSON; its value is the start of the raw one
MAX_MESSAGE_CHARS: Final = 2000  # a dead letter's reason, an error's message

_BAD_CHARS = {chr(0)} | {chr(c) for c in range(0xD800, 0xE000)}  # NUL, lone surrogates


class LimitExceeded(ValueError):
    """A value over one of the limits; the message names the limit and where."""


def clip(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` cut to `limit` characters (marked as cut), NUL removed: safe in any payload."""
    message = message.replace("\x00", "\\0")
    return message if len(message) <= limit else message[: limit - 15] + "... (truncated)"


def _where(path: list[Any]) -> str:
    return ".".join(str(p) for p in path) or "event"


def _check_string(value: str, path: list[Any]) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise LimitExceeded(
            f"{_where(path)}: string of {len(value)} characters exceeds MAX_STRING_CHARS ({MAX_STRING_CHARS})"
        )
    if not _BAD_CHARS.isdisjoint(value):
        raise LimitExceeded(f"{_where(path)}: string holds NUL or an unpaired surrogate, which cannot be stored")


def check_document(document: object, raw: bytes | None = None) -> None:
    """Raise LimitExceeded when `document` (parsed JSON) is nested deeper than MAX_DEPTH, holds a
    string over MAX_STRING_CHARS or with NUL / unpaired surrogates, or a number that is not
    finite or beyond MAX_NUMBER. Iterative: no recursion on hostile input.

    `raw`, the bytes `document` was parsed from, lets it skip the string checks when no string can
    fail them: JSON text can only carry NUL or a surrogate as a `\\u` escape or (as `json.loads`
    decodes bytes with surrogatepass) as the UTF-8-like bytes ED A0-BF, and no string is longer
    than its document. A first walk keeps no paths; only a document that fails it is walked again
    to name where."""
    chars = raw is None or b"\\u" in raw or b"\xed" in raw
    lengths = raw is None or len(raw) > MAX_STRING_CHARS
    if not _passes(document, chars=chars, lengths=lengths):
        _check_document_naming_the_path(document)


def _passes(document: object, *, chars: bool, lengths: bool) -> bool:
    """Whether `document` is within the limits (`chars`, `lengths`: check the strings' characters,
    their lengths)."""
    if type(document) is not dict and type(document) is not list:
        return _scalar_passes(document)
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if type(container) is dict:
            if chars or lengths:
                for key in container:
                    if (lengths and len(key) > MAX_STRING_CHARS) or (chars and not _BAD_CHARS.isdisjoint(key)):
                        return False
            values = container.values()
        else:
            values = container
        for value in values:
            kind = type(value)
            if kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif kind is str:
                if (lengths and len(value) > MAX_STRING_CHARS) or (chars and not _BAD_CHARS.isdisjoint(value)):
                    return False
            elif kind is float or kind is int:
                if value != value or abs(value) > MAX_NUMBER:  # NaN is not equal to itself
                    return False
            elif kind is bool or value is None:
                continue
            elif not _scalar_passes(value):
                return False
    return True


def _scalar_passes(value: object) -> bool:
    try:
        _check_document_naming_the_path(value)
    except LimitExceeded:
        return False
    return True


def _check_document_naming_the_path(document: object) -> None:
    stack: list[tuple[object, int, list[Any]]] = [(document, 1, [])]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (int, float)):
            if not math.isfinite(value) or abs(value) > MAX_NUMBER:
                shown = repr(value) if isinstance(value, float) or abs(value) < 10**30 else "a huge integer"
                raise LimitExceeded(
                    f"{_where(path)}: number {shown} is not finite or beyond MAX_NUMBER ({MAX_NUMBER:g})"
                )
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise LimitExceeded(f"{_where(path)}: nested deeper than MAX_DEPTH ({MAX_DEPTH})")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_string(key, [*path, "<key>"])
                    stack.append((item, depth + 1, [*path, key[:40]]))
            else:
                stack.extend((item, depth + 1, [*path, i]) for i, item in enumerate(value))


def check_key(key: bytes | None) -> str | None:
    """The Kafka key as text; LimitExceeded when it is not UTF-8, over MAX_ID_CHARS or holds NUL."""
    if key is None:
        return None
    if len(key) > 4 * MAX_ID_CHARS:
        raise LimitExceeded(f"key of {len(key)} bytes exceeds MAX_ID_CHARS ({MAX_ID_CHARS} characters)")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise LimitExceeded("key is not UTF-8 text") from None
    if len(text) > MAX_ID_CHARS:
        raise LimitExceeded(f"key of {len(text)} characters exceeds MAX_ID_CHARS ({MAX_ID_CHARS})")
    if "\x00" in text:
        raise LimitExceeded("key holds NUL")
    return text


def check_timestamp(value: datetime) -> datetime:
    """`value` as an aware datetime (naive read as UTC) when its year is in MIN_YEAR..MAX_YEAR.
    The year is checked before any arithmetic, so calendar edges with offsets cannot overflow."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise LimitExceeded(f"timestamp {value.isoformat()} outside {MIN_YEAR}-{MAX_YEAR} (timestamp range)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def check_date(value: date) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise LimitExceeded(f"date {value.isoformat()} outside {MIN_YEAR}-{MAX_YEAR} (timestamp range)")
    return value
