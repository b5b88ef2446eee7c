"""The model versions' endpoints: versions, rollback, promote, champion, live figures, shadow
challenger, artifact bytes and validation results."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any

from aiohttp import web

from fcl.storage.artifacts import ArtifactChecksumError, ArtifactError, StoredArtifact
from fcl.storage.errors import AlreadyChampion, ChampionMoved, ChampionNotExpected, VersionDeleted
from fcl.storage.stores import IdempotencyKeyReused
from fcl.web import schemas as s
from fcl.web.api import ApiError, Call
from fcl.web.context import (
    ARTIFACT_CHUNK,
    VERSION_TABLES,
    actor,
    below,
    cached,
    idempotency,
    key_of,
    log,
    page_key,
    services_of,
)


async def model_versions(call: Call) -> web.Response:
    svc = services_of(call)
    q: s.ModelVersionsQuery = call.query
    after = page_key(q.before, s.decode_time, str, below(2**31))
    ledger_after = page_key(q.ledger_before, s.decode_time, below(2**63))

    async def read() -> bytes:
        page = await svc.reads.model_versions(
            q.model_type, limit=q.limit, version=q.version, after=after, ledger_after=ledger_after
        )
        more = json.dumps({"next_before": key_of(page.next_versions), "ledger_next_before": key_of(page.next_ledger)})
        return (page.body[:-1] + "," + more[1:]).encode()  # the two objects' members in one

    key = ("versions", q.model_type, q.version, q.limit, q.before, q.ledger_before)
    return cached(await svc.cache.get_or_load(key, VERSION_TABLES, read))


async def rollback(call: Call) -> tuple[int, s.ChampionMoveView]:
    svc = services_of(call)
    model_type = call.path["model_type"]
    body: s.RollbackBody = call.body
    try:
        move = await svc.db.rollback(
            model_type, actor=actor(call), expected_version=body.expected_version, idempotency=idempotency(call, body)
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except ChampionNotExpected as exc:
        raise ApiError(409, "champion_not_expected", str(exc)) from None
    except VersionDeleted as exc:
        raise ApiError(409, "version_deleted", str(exc)) from None
    except ChampionMoved:
        raise ApiError(409, "champion_moved", f"the {model_type} champion moved meanwhile; look again") from None
    if move is None:
        raise ApiError(409, "no_previous_champion", f"{model_type} has no earlier champion to roll back to")
    return 200, s.ChampionMoveView.of(move)


async def promote(call: Call) -> tuple[int, s.ChampionMoveView]:
    svc = services_of(call)
    model_type, version = call.path["model_type"], call.path["version"]
    body: s.PromoteBody = call.body
    try:
        move = await svc.db.promote(
            model_type,
            version,
            note=body.reason,
            actor=actor(call),
            expected_version=body.expected_version,
            idempotency=idempotency(call, body),
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except ChampionNotExpected as exc:
        raise ApiError(409, "champion_not_expected", str(exc)) from None
    except LookupError as exc:
        raise ApiError(404, "unknown_version", str(exc)) from None
    except VersionDeleted as exc:
        raise ApiError(409, "version_deleted", str(exc)) from None
    except AlreadyChampion as exc:
        raise ApiError(409, "already_champion", str(exc)) from None
    except ChampionMoved:
        raise ApiError(409, "champion_moved", f"the {model_type} champion moved meanwhile; look again") from None
    return 200, s.ChampionMoveView.of(move)


async def champion(call: Call) -> tuple[int, s.ChampionView]:
    model_type = call.path["model_type"]
    found = await services_of(call).db.champion(model_type)
    if found is None:
        raise ApiError(404, "no_champion", f"{model_type} has no champion yet")
    move, version = found
    return 200, s.ChampionView(
        model_type=model_type,
        version=version.version,
        move=s.ChampionMoveView.of(move),
        model=s.ModelVersionView.of(version, move.version),
    )


async def live(call: Call) -> tuple[int, s.LiveView]:
    model_type, version = call.path["model_type"], call.path["version"]
    q: s.LiveQuery = call.query
    db = services_of(call).db
    found = await db.live_figures(model_type, version, q.window)
    if found is None:
        if await db.version(model_type, version) is None:
            raise ApiError(404, "no_such_version", f"{model_type} has no version {version}")
        return 200, s.LiveView(model_type=model_type, version=version, window=q.window, computed_at=None, predictions=0)
    figures, computed_at = found
    fields = {k: v for k, v in figures.items() if k in s.LiveView.model_fields and k not in ("window", "computed_at")}
    return 200, s.LiveView.model_validate({**fields, "window": q.window, "computed_at": computed_at})


async def shadow(call: Call) -> tuple[int, s.ShadowView]:
    model_type = call.path["model_type"]
    q: s.LiveQuery = call.query
    db = services_of(call).db
    challenger, found = await db.shadow(model_type, q.window)
    record = None
    if challenger is not None:
        version, current = await db.version(model_type, challenger.version), await db.champion(model_type)
        if version is not None:
            record = s.ModelVersionView.of(version, current[0].version if current else None)
    return 200, _shadow_view(model_type, q.window, challenger, found, record)


def _shadow_view(
    model_type: str, window: str, challenger: Any, found: Any, record: s.ModelVersionView | None
) -> s.ShadowView:
    view = s.ShadowView(
        model_type=model_type,
        window=window,
        model=record,
        challenger=None if challenger is None else challenger.version,
        set_by=None if challenger is None else challenger.actor,
        set_at=None if challenger is None else challenger.set_at,
    )
    if challenger is None or found is None:
        return view
    figures, computed_at = found
    if (figures.get("challenger") or {}).get("version") != challenger.version:
        return view  # a comparison with an earlier challenger: not this one's
    return view.model_copy(
        update={
            "computed_at": computed_at,
            "predictions": int(figures.get("predictions") or 0),
            "with_outcome": int(figures.get("with_outcome") or 0),
            "evaluated_pairs": int(figures.get("evaluated_pairs") or 0),
            "champion": s.ShadowSide.model_validate(figures["champion"]),
            "shadow": s.ShadowSide.model_validate(figures["challenger"]),
            "comparison": figures.get("comparison"),
        }
    )


async def set_shadow(call: Call) -> tuple[int, s.ShadowView]:
    svc = services_of(call)
    model_type = call.path["model_type"]
    body: s.ShadowBody = call.body
    version = await svc.db.version(model_type, body.version)
    if version is None:
        raise ApiError(404, "unknown_version", f"{model_type} has no version {body.version}")
    if version.deleted_at is not None:
        raise ApiError(409, "version_deleted", f"{model_type} v{body.version} was removed by the retention")
    current = await svc.db.champion(model_type)
    if current is not None and current[0].version == body.version:
        raise ApiError(409, "already_champion", f"{model_type} v{body.version} is the champion: it serves already")
    challenger = await svc.db.set_shadow(model_type, body.version, actor(call))
    if challenger is None:
        raise ApiError(404, "unknown_version", f"{model_type} has no version {body.version}")
    log.info("%s: v%s is the shadow challenger (%s)", model_type, body.version, challenger.actor)
    record = s.ModelVersionView.of(version, current[0].version if current else None)
    return 200, _shadow_view(model_type, "day", challenger, None, record)


async def clear_shadow(call: Call) -> tuple[int, s.ShadowCleared]:
    model_type = call.path["model_type"]
    was = await services_of(call).db.clear_shadow(model_type)
    if was is not None:
        log.info("%s: v%s is no longer the shadow challenger (%s)", model_type, was, actor(call))
    return 200, s.ShadowCleared(model_type=model_type, cleared=was)


async def artifact(call: Call) -> web.StreamResponse:
    """The artifact's bytes, streamed from the store in chunks while they are hashed, one chunk
    held back: the last is sent only once the whole has matched the recorded sha256 and size. An
    artifact of one chunk that fails answers 503; a longer one that fails has its connection
    aborted before its last chunk, so a client never receives the whole of bytes that fail."""
    svc = services_of(call)
    model_type, number = call.path["model_type"], call.path["version"]
    version = await svc.db.version(model_type, number)
    if version is None:
        raise ApiError(404, "unknown_version", f"{model_type} has no version {number}")
    if version.deleted_at is not None:
        raise ApiError(
            410, "version_deleted", f"{model_type} v{number} was removed by the retention; its artifact is gone"
        )
    etag = f'"{version.artifact_sha256}"'
    digest = "sha-256=" + base64.b64encode(bytes.fromhex(version.artifact_sha256)).decode()
    headers = {"ETag": etag, "Digest": digest, "Cache-Control": "private, no-transform"}
    wanted = {t.strip() for t in call.request.headers.get("If-None-Match", "").split(",") if t.strip()}
    if etag in wanted or f"W/{etag}" in wanted or "*" in wanted:
        return web.Response(status=304, headers=headers)
    stored = StoredArtifact(
        path=version.artifact_path,
        sha256=version.artifact_sha256,
        size=version.artifact_size,
        format=version.artifact_format,
    )
    name = f"{model_type}-v{number}.{version.artifact_format}"
    chunks = svc.artifacts.chunks(stored.path, ARTIFACT_CHUNK)
    hasher, got = hashlib.sha256(), 0
    response: web.StreamResponse | None = None

    def unreadable(why: str) -> ApiError:
        return ApiError(503, "artifact_unreadable", f"the artifact of {model_type} v{number} cannot be read: {why}")

    try:
        held = await asyncio.to_thread(next, chunks, b"")
        hasher.update(held)
        got = len(held)
        while True:
            following = await asyncio.to_thread(next, chunks, None)
            if following is None:
                break
            hasher.update(following)
            got += len(following)
            if got > stored.size:
                raise ArtifactChecksumError(f"{stored.path}: more than the {stored.size} bytes recorded")
            if response is None:
                response = web.StreamResponse(
                    headers={**headers, "Content-Disposition": f'attachment; filename="{name}"'}
                )
                response.content_type = "application/octet-stream"
                response.content_length = stored.size
                await response.prepare(call.request)
            await response.write(held)
            held = following
        if got != stored.size:
            raise ArtifactChecksumError(f"{stored.path}: {got} bytes in the store, {stored.size} recorded")
        if hasher.hexdigest() != stored.sha256:
            raise ArtifactChecksumError(
                f"{stored.path}: sha256 {hasher.hexdigest()} in the store, {stored.sha256} recorded"
            )
    except (ArtifactError, OSError) as exc:
        if response is None:
            raise unreadable(str(exc)) from None
        log.error("the artifact of %s v%s failed while it was sent; connection aborted: %s", model_type, number, exc)
        if call.request.transport is not None:
            call.request.transport.abort()  # the client sees a short body: never the whole of bad bytes
        return response
    if response is None:
        response = web.StreamResponse(headers={**headers, "Content-Disposition": f'attachment; filename="{name}"'})
        response.content_type = "application/octet-stream"
        response.content_length = stored.size
        await response.prepare(call.request)
    await response.write(held)
    await response.write_eof()
    return response


async def validation_results(call: Call) -> tuple[int, s.ValidationView]:
    svc = services_of(call)
    event_id = call.path["training_event_id"]
    found = await svc.db.validation(event_id)
    if found is None:
        raise ApiError(404, "not_found", f"no training event {event_id}")
    event, checks, version = found.event, found.checks, found.version
    if version is None:
        raise ApiError(
            404,
            "not_validated",
            f"training event {event_id} ended {event.status.value}; only a completed training is validated",
        )
    return 200, s.ValidationView(
        training_event_id=event.id,
        job_id=event.job_id,
        model_type=event.model_type,
        candidate_version=version.version,
        baseline_version=version.parent_version,
        metrics=event.metrics,
        checks=checks,
        passed=bool(event.validation_passed),
        promoted=bool(event.promoted),
        verdict=event.verdict,
        message=event.verdict_message,
        drift=event.drift,
    )
