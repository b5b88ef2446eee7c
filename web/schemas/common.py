"""The base of every view, the error body, the query and body models that several areas share,
and the opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from fcl.contract.enums import TrainingEventStatus
from fcl.contract.events import Timestamp
from fcl.contract.model_types import ModelTypeName


class View(BaseModel):
    model_config = ConfigDict(frozen=True, use_enum_values=True)


# -- errors -----------------------------------------------------------------------------------------
class ErrorDetail(View):
    code: str = Field(description="machine-readable, e.g. not_found, invalid_body, unauthorized")
    message: str
    request_id: str
    details: list[dict[str, Any]] | None = Field(default=None, description="field errors of a 422")


class ErrorBody(View):
    error: ErrorDetail


# -- requests ---------------------------------------------------------------------------------------
class TriggerBody(BaseModel):
    """Unknown extra fields are ignored, as in events."""

    model_config = ConfigDict(extra="ignore")
    # strict: a JSON true or 5.0 is not a priority (the schema says integer; lax mode read true as 1)
    priority: int = Field(default=5, ge=0, le=9, strict=True, description="0-9, higher runs first")
    dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="default: fincoach-<model_type>",
    )


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=10, ge=1, le=100)
    model_type: ModelTypeName | None = None
    status: TrainingEventStatus | None = None
    before: str | None = Field(
        default=None, max_length=200, description="the `next_before` of the previous page (opaque cursor)"
    )


class ModelVersionsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_type: ModelTypeName | None = None
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="only this version (with model_type)")
    limit: int = Field(default=50, ge=1, le=500, description="versions, and ledger moves, per page")
    before: str | None = Field(
        default=None, max_length=600, description="the `next_before` of the previous page (older versions)"
    )
    ledger_before: str | None = Field(
        default=None, max_length=600, description="the `ledger_next_before` of the previous page (older moves)"
    )


def encode_cursor(started_at: datetime, event_id: uuid.UUID) -> str:
    """The cursor of the page after the training event (started_at, event_id)."""
    raw = f"{started_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Raises ValueError for anything that is not a cursor this API made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        started = datetime.fromisoformat(at)
        if started.tzinfo is None:
            raise ValueError("no zone")
        return started, uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("`before` is not a cursor from a previous page") from exc


def _encodable(value: str) -> str:
    """Text PostgreSQL can store: UTF-8 (no lone surrogate) without NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text") from None
    if "\x00" in value:
        raise ValueError("NUL is not allowed in text")
    return value


def _text_only(value: Any) -> Any:
    """A time in a body is RFC 3339 text, as the document says: not a number read as epoch seconds."""
    if not isinstance(value, str):
        raise ValueError("a time is RFC 3339 text")
    return value


# Text a filter compares with stored text; a row id (a bigint); a time given in a body.
FilterText = Annotated[str, Field(max_length=500), AfterValidator(_encodable)]
RowId = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
BodyTime = Annotated[Timestamp, BeforeValidator(_text_only)]


class PageQuery(BaseModel):
    """A page of a list that grows without bound (cursor paging, oldest first)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=50, ge=1, le=500)
    after: str | None = Field(
        default=None, max_length=600, description="the `next_after` of the previous page (opaque cursor)"
    )


def encode_key(*parts: str) -> str:
    """An opaque cursor of a row's sort key (strings; a timestamp in isoformat)."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_key(cursor: str, arity: int) -> list[str]:
    """The parts of a cursor `encode_key` made; ValueError for anything else."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("`after` is not a cursor from a previous page") from exc
    if not (isinstance(parts, list) and len(parts) == arity and all(isinstance(p, str) for p in parts)):
        raise ValueError("`after` is not a cursor from a previous page")
    return parts


def decode_time(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError("`after` is not a cursor from a previous page")
    return at
