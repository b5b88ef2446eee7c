"""`fcl web`: the aiohttp application. `make_app(settings)` wires the route table (web/routes.py),
the edge middleware (request ids, JSON errors, latency metrics), the database and the event
publisher; `main` serves it on FCL_HTTP_HOST:FCL_HTTP_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from fcl.contract import __version__, logs
from fcl.contract.lifeline import exit_when_done
from fcl.contract.settings import Settings, load_settings
from fcl.messaging.producer import BackgroundProducer, is_record_error
from fcl.storage.db import Database
from fcl.storage.entities import AdmissionPolicy
from fcl.storage.errors import StorageError
from fcl.storage.notifications import ChangeListener, Notifications
from fcl.storage.outbox import OutboxRelay
from fcl.storage.reads import ReadViews
from fcl.storage.stores import ApiStore
from fcl.web.api import ApiError, Tokens, error_response, openapi, register, request_id
from fcl.web.cache import ResponseCache
from fcl.web.context import SERVICES, Services
from fcl.web.metrics import Metrics
from fcl.web.routes import ENDPOINTS

log = logging.getLogger("fcl.web")

MAX_REQUEST_LINE = 64 * 1024
_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every response leaves through here: errors become JSON with the request id (never a stack
    trace), and each request's latency is recorded under its route's pattern."""
    started = time.perf_counter()
    rid = request_id(request)
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(request, exc.status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:  # the router's 404/405, the body limit's 413
        if exc.status < 400:
            raise
        if exc.status == 413:
            limit = request.app[SERVICES].settings.http_max_body_bytes
            message = f"the body is larger than {limit} bytes"
        elif exc.status == 405:
            message = f"{request.method} is not allowed here; allowed: {exc.headers.get('Allow', '')}"
        else:
            message = exc.reason
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = error_response(request, exc.status, _CODES.get(exc.status, "error"), message, headers=headers)
    except Exception as exc:
        if isinstance(exc, StorageError) and exc.retriable:
            log.warning("request %s: database unavailable: %s", rid, exc)
            response = error_response(request, 503, "unavailable", "the database is unavailable; try again shortly")
        else:
            log.exception("request %s failed", rid)
            response = error_response(
                request, 500, "internal_error", f"an internal error; the service log has it under request id {rid}"
            )
    response.headers["X-Request-Id"] = rid
    route = request.match_info.route.resource
    pattern = route.canonical if route is not None else "unmatched"
    request.app[SERVICES].metrics.observe(request.method, pattern, response.status, time.perf_counter() - started)
    return response


def make_app(settings: Settings, *, relay_events: bool = True) -> web.Application:
    """The application. With `relay_events` it runs an outbox relay with its own Kafka producer,
    so the events its changes queue are sent even when no other fcl process runs."""
    app = web.Application(middlewares=[edge], client_max_size=settings.http_max_body_bytes)
    # no overflow: a request past the pool waits for a pooled connection, cheaper under load than a
    # connection opened and closed for it (each a new server process and a statement prepared anew)
    db = Database(settings.database_url, pool_size=settings.http_db_pool, max_overflow=0, pre_ping=False)
    notifications = Notifications(settings.database_url)
    listener = ChangeListener(notifications) if settings.http_cache else None
    producer = BackgroundProducer(settings) if relay_events else None
    relay = (
        OutboxRelay.from_settings(
            settings, db, producer.send, notifications=notifications, is_record_error=is_record_error
        )
        if producer is not None
        else None
    )
    services = Services(
        settings=settings,
        db=ApiStore(db, AdmissionPolicy.from_settings(settings)),
        producer=producer,
        metrics=Metrics(),
        cache=ResponseCache(listener),
        reads=ReadViews(db),  # the same pool: one connection budget per process
    )
    app[SERVICES] = services
    tokens = Tokens(
        admin=settings.api_token,
        serve=settings.serve_token,
        read=settings.read_token,
        admin_name=settings.api_token_name,
    )
    register(app, ENDPOINTS, tokens=lambda: tokens)
    document = openapi(
        ENDPOINTS,
        title="fcl: FinCoach continuous learning",
        version=__version__,
        description="Training status, jobs, history, model versions and validation results "
        "(see docs/contract.md). Every POST needs `Authorization: Bearer "
        "$FCL_API_TOKEN` (admin); an artifact's download the serve or admin token; "
        "every GET but /livez and /readyz a read, serve or admin token once FCL_READ_TOKEN is set. "
        'Errors: `{"error": {"code", "message", "request_id"}}`.',
    )
    services.openapi_bytes = json.dumps(document).encode()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # Each step is undone on the way out, last first, even when an earlier undo failed.
        # The relay or the listener ending while the app runs ends the process (status 1).
        stopping = asyncio.Event()
        async with contextlib.AsyncExitStack() as running:
            running.push_async_callback(db.close)
            notifications.start()
            running.push_async_callback(notifications.stop)
            if notifications.task is not None:
                exit_when_done(notifications.task, "notification listener", stopping.is_set)
            if producer is not None and relay is not None:
                exit_when_done(producer.start(), "Kafka producer", stopping.is_set)
                running.push_async_callback(producer.stop)
                exit_when_done(relay.start(), "outbox relay", stopping.is_set)
                running.push_async_callback(relay.stop)
            running.callback(stopping.set)
            yield

    app.cleanup_ctx.append(lifecycle)
    return app


def main(host: str | None = None, port: int | None = None) -> None:
    settings = load_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level, quiet=["aiohttp.access"])
    host, port = host or settings.http_host, port or settings.http_port
    if settings.api_token is None:
        log.warning("FCL_API_TOKEN is not set: every POST will be refused with 401")
    print(
        f"fcl web: dashboard http://{host}:{port}/ · API http://{host}:{port}/coaching/continuous-learning", flush=True
    )
    # A request line or header up to 64 KiB reaches the handlers (and their JSON errors); aiohttp's
    # default of 8 KiB answered longer query strings with a plain-text 400 of its own.
    web.run_app(
        make_app(settings),
        host=host,
        port=port,
        print=None,
        access_log=None,
        max_line_size=MAX_REQUEST_LINE,
        max_field_size=MAX_REQUEST_LINE,
    )
