"""What every handler shares: the process's services, the path parameters, the
Idempotency-Key, the acting admin and the opaque page cursors."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from fcl.contract import model_types
from fcl.contract.settings import Settings
from fcl.messaging.producer import BackgroundProducer
from fcl.storage.artifacts import ArtifactStore
from fcl.storage.reads import ReadViews
from fcl.storage.stores import ApiStore
from fcl.web import schemas as s
from fcl.web.api import ApiError, Call, PathParam
from fcl.web.cache import ResponseCache
from fcl.web.metrics import Metrics

PREFIX = "/coaching/continuous-learning"
DASHBOARD = Path(__file__).with_name("dashboard.html")


@dataclass
class Services:
    settings: Settings
    db: ApiStore
    producer: BackgroundProducer | None  # None when this process does not relay its events
    metrics: Metrics
    cache: ResponseCache
    reads: ReadViews
    openapi_bytes: bytes = b""
    artifacts: ArtifactStore = field(init=False)

    def __post_init__(self) -> None:
        self.artifacts = ArtifactStore.from_settings(self.settings)  # keeps its store clients


log = logging.getLogger("fcl.web")
SERVICES = web.AppKey("services", Services)
ARTIFACT_CHUNK = 1024 * 1024
ACTOR_HEADER = "X-FCL-Actor"


def services_of(call: Call) -> Services:
    return call.request.app[SERVICES]


# -- path parameters --------------------------------------------------------------------------------
def _model_type(value: str) -> str:
    parsed = model_types.parse(value)
    if parsed is None:
        raise ApiError(404, "unknown_model_type", f"unknown model type {value[:100]!r}; known: {model_types.known()}")
    return parsed


def _uuid(what: str) -> Any:
    def parse(value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            raise ApiError(422, "invalid_parameter", f"{what} must be a UUID, not {value[:100]!r}") from None

    return parse


MODEL_TYPE = PathParam(
    "model_type", {"type": "string", "enum": list(model_types.names())}, "a registered model type", _model_type
)
JOB_ID = PathParam("job_id", {"type": "string", "format": "uuid"}, "a job's id", _uuid("job_id"))


def _version(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 9 and int(value) >= 1):
        raise ApiError(422, "invalid_parameter", f"version must be a positive integer, not {value[:100]!r}")
    return int(value)


VERSION = PathParam("version", {"type": "integer", "minimum": 1}, "a version number of the model type", _version)


def _dataset_id(value: str) -> str:
    if not (0 < len(value) <= 256 and value.isprintable()):
        raise ApiError(422, "invalid_parameter", "a dataset id is 1-256 printable characters")
    return value


DATASET_ID = PathParam("dataset_id", {"type": "string", "maxLength": 256}, "a dataset's id", _dataset_id)


def _letter(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 18):
        raise ApiError(422, "invalid_parameter", f"a dead letter's id is a positive integer, not {value[:100]!r}")
    return int(value)


LETTER = PathParam("letter", {"type": "integer", "minimum": 1}, "a kept input's id", _letter)
TRAINING_EVENT_ID = PathParam(
    "training_event_id",
    {"type": "string", "format": "uuid"},
    "a training event's id (history, status events)",
    _uuid("training_event_id"),
)


def idempotency_key(call: Call) -> str | None:
    key = call.request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
        raise ApiError(422, "invalid_header", "Idempotency-Key must be 1-200 printable characters")
    return key


def idempotency(call: Call, body: BaseModel) -> tuple[str, str] | None:
    """The request's Idempotency-Key with a digest of what it asks (path and parsed body)."""
    key = idempotency_key(call)
    if key is None:
        return None
    asked = f"{call.request.method} {call.request.path}\0{body.model_dump_json()}"
    return key, hashlib.sha256(asked.encode()).hexdigest()


HISTORY_TABLES = ("training_events",)
VERSION_TABLES = ("model_versions", "champion_ledger")


def cached(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def key_of(parts: tuple[Any, ...] | None) -> str | None:
    """The opaque cursor of a row's sort key (timestamps in isoformat)."""
    if parts is None:
        return None
    return s.encode_key(*(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts))


def next_cursor(page: list[Any], limit: int, key: Callable[[Any], tuple[Any, ...]]) -> str | None:
    """The cursor after a full page's last row; None when the page is not full (the end)."""
    return key_of(key(page[-1])) if page and len(page) == limit else None


def page_key(cursor: str | None, *kinds: Callable[[str], Any]) -> Any:
    """The sort key a previous page's cursor names, each part read by its kind (None: from the
    start); 422 for anything this API did not make."""
    if not cursor:
        return None
    try:
        return tuple(kind(part) for kind, part in zip(kinds, s.decode_key(cursor, len(kinds)), strict=True))
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_cursor", f"not a cursor from a previous page ({exc})") from None


def below(bound: int) -> Callable[[str], int]:
    """A cursor part that is a positive integer below `bound` (a version, a row id)."""

    def read(part: str) -> int:
        number = int(part)
        if not 0 <= number < bound:
            raise ValueError("out of range")
        return number

    return read


def actor(call: Call) -> str:
    """Who made a champion move through the API: the admin token's name (FCL_API_TOKEN_NAME), then
    what `X-FCL-Actor` claims when the caller names itself (the `fcl` CLI sends user@host). The
    token is what was checked; the claim is what the caller says."""
    name = services_of(call).settings.api_token_name
    claimed = "".join(ch for ch in call.request.headers.get(ACTOR_HEADER, "") if ch.isprintable()).strip()
    return f"{name} (claims {claimed[:200]})" if claimed else name
