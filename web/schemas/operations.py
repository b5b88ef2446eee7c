"""The operators' views and bodies: the outbox, datasets, dead letters, health and readiness."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fcl.contract.events import Timestamp
from fcl.storage.entities import (
    Dataset,
    StoredDeadLetter,
)
from fcl.web.schemas.common import BodyTime, FilterText, PageQuery, RowId, View


class ParkedEvent(View):
    """An outbox row the relay parked (read from `storage.entities.ParkedOutboxRow`'s attributes)."""

    model_config = ConfigDict(frozen=True, use_enum_values=True, from_attributes=True)

    id: int
    event_id: uuid.UUID
    topic: str
    key: str | None
    attempts: int = Field(description="tries the broker refused")
    last_error: str | None
    payload_bytes: int
    created_at: datetime
    parked_at: datetime


class OutboxState(View):
    pending: int = Field(description="events committed and not yet published")
    parked: list[ParkedEvent] = Field(description="a page of the events the relay gave up on, with their errors")
    next_after: str | None = Field(description="pass as `after` for the next page of parked events; null at the end")


class DatasetView(View):
    dataset_id: str
    model_type: str
    threshold: int
    samples_since_training: int = Field(description="the counter: samples since the last training")
    total_samples: int
    crossings: int = Field(description="how many times the counter reached its threshold")
    last_trained_at: datetime | None
    sample_shape: dict[str, Any] | None = Field(
        description="what every sample shares (feature names, state length); null after a reset"
    )
    shape_version: int = Field(description="adding features, or a reset, starts the next version")
    shape_from_id: int = Field(description="trainings read the samples after this id: the newest shape's")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: Dataset) -> DatasetView:
        return cls.model_validate(d, from_attributes=True)


class DeadLetterQuery(PageQuery):
    reason: FilterText | None = Field(default=None, description="only letters whose reason contains this")
    since: Timestamp | None = Field(default=None, description="only letters kept since then (RFC 3339)")


class DeadLetterView(View):
    id: int
    letter_id: uuid.UUID = Field(description="the `event_id` of its letter on the dead-letter topic")
    source_topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the record's key, as text (invalid UTF-8 replaced)")
    value_bytes: int = Field(description="the value's size as it arrived")
    kept_bytes: int = Field(description="how much of it is kept (up to FCL_MAX_EVENT_BYTES)")
    reason: str
    created_at: datetime
    replayed_at: datetime | None
    replays: int

    @classmethod
    def of(cls, d: StoredDeadLetter) -> DeadLetterView:
        return cls(
            id=d.id,
            letter_id=d.letter_id,
            source_topic=d.source_topic,
            partition=d.partition,
            offset=d.offset,
            key=d.key.decode("utf-8", errors="replace") if d.key is not None else None,
            value_bytes=d.value_bytes,
            kept_bytes=len(d.value or b""),
            reason=d.reason,
            created_at=d.created_at,
            replayed_at=d.replayed_at,
            replays=d.replays,
        )


class DeadLetterDetail(DeadLetterView):
    value: str | None = Field(description="the value kept, as text when it is UTF-8, else base64")
    value_encoding: Literal["text", "base64"]

    @classmethod
    def of_letter(cls, d: StoredDeadLetter) -> DeadLetterDetail:
        raw = d.value or b""
        try:
            value, encoding = raw.decode("utf-8"), "text"
        except UnicodeDecodeError:
            value, encoding = base64.b64encode(raw).decode(), "base64"
        return cls(
            **DeadLetterView.of(d).model_dump(), value=value if d.value is not None else None, value_encoding=encoding
        )


class DeadLetterPage(View):
    items: list[DeadLetterView]
    next_after: str | None = Field(description="pass as `after` for the next page; null at the end")


class ReplayBody(BaseModel):
    """Which kept inputs to send back through the door they came in by: `ids`, or every one whose
    reason contains `reason` and that was kept since `since`; at most `limit` per call."""

    model_config = ConfigDict(extra="ignore")
    ids: list[RowId] | None = Field(default=None, max_length=1000)
    reason: FilterText | None = None
    since: BodyTime | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class Replayed(View):
    replayed: int = Field(description="how many were sent back to their topic")
    ids: list[int] = Field(description="the ones sent")


class UnparkBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[RowId] | None = Field(
        default=None, max_length=10_000, description="the parked rows to put back in line; omitted: all of them"
    )


class Unparked(View):
    unparked: int = Field(description="how many parked events went back in line")


class Health(View):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    broker: Literal["ok", "unreachable", "not configured"]


class Liveness(View):
    status: Literal["ok"]


class Readiness(View):
    status: Literal["ready", "not ready"]
    checked: list[str] | None = Field(default=None, description="the checks that passed, when all did")
    not_ready: list[str] | None = Field(default=None, description="the names of the checks that failed")
