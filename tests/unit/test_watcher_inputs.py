"""The champion watcher against a hostile API (a local aiohttp server, no Kafka): whatever the
champion record or the download looks like (any shape, size or speed), `refresh` ends in a swap,
in nothing to do, or in WatcherError with the reason, and the old model keeps serving."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcl.serving import watcher as watching
from fcl.serving.watcher import API, ChampionWatcher, WatcherError
from fcl.trainers.base import TrainRequest
from fcl.trainers.registry import get_trainer
from fcl.trainers.simulator import FinCoachSimulator


@pytest.fixture(scope="module")
def artifact() -> bytes:
    samples = FinCoachSimulator(seed=2, n_users=300).segmentation_samples()
    return (
        get_trainer("segmentation")
        .train(TrainRequest(samples=samples, seed=1, hyperparameters={"k_max": 3}))
        .artifact.data
    )


def _record(data: bytes, version: int = 4, **artifact: Any) -> dict[str, Any]:
    fields = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "format": "skops"} | artifact
    return {"version": version, "model": {"artifact": fields}}


class Api:
    """What the fake API answers: the champion's body and status, and the artifact's handler."""

    def __init__(self) -> None:
        self.champion: bytes = b"{}"
        self.shadow: bytes = b'{"challenger": null}'
        self.status = 200
        self.download: Callable[[web.Request], Any] = lambda request: web.Response(status=404)

    def app(self) -> web.Application:
        app = web.Application()

        async def champion(request: web.Request) -> web.Response:
            return web.Response(status=self.status, body=self.champion, content_type="application/json")

        async def download(request: web.Request) -> Any:
            return await self.download(request)

        async def shadow(request: web.Request) -> web.Response:
            return web.Response(status=self.status, body=self.shadow, content_type="application/json")

        app.router.add_get(API + "/model-versions/segmentation/champion", champion)
        app.router.add_get(API + "/model-versions/segmentation/shadow", shadow)
        app.router.add_get(API + "/model-versions/segmentation/{version}/artifact", download)
        return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Api, ChampionWatcher]]:
    api = Api()
    server = TestServer(api.app())
    await server.start_server()
    watcher = ChampionWatcher(
        "segmentation", api_url=str(server.make_url("")), token=None, kafka_bootstrap="127.0.0.1:9"
    )
    watcher._http = aiohttp.ClientSession()  # what open() makes, without the topic
    try:
        yield api, watcher
    finally:
        await watcher._http.close()
        await server.close()


def _bytes(data: bytes) -> Callable[[web.Request], Any]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=data)

    return answer


HOSTILE = [
    (b"[]", "unexpected document"),
    (b'{"version": 4, "model": null}', "unexpected document"),
    (b'{"version": 1e999, "model": {"artifact": {}}}', "unexpected document"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b"not json at all", "not JSON"),
    (
        json.dumps(
            {"version": "4", "model": {"artifact": {"sha256": "0" * 64, "size": 1, "format": "skops"}}}
        ).encode(),
        "not a version number",
    ),
    (
        json.dumps({"version": 4, "model": {"artifact": {"sha256": "zz", "size": 1, "format": "skops"}}}).encode(),
        "not a sha256",
    ),
    (
        json.dumps({"version": 4, "model": {"artifact": {"sha256": "0" * 64, "size": -1, "format": "skops"}}}).encode(),
        "not a byte count",
    ),
    (
        json.dumps({"version": 4, "model": {"artifact": {"sha256": "0" * 64, "size": 1, "format": "pickle"}}}).encode(),
        "not one fcl writes",
    ),
    (b" " * (2 << 20), "more than"),
]


@pytest.mark.parametrize(("body", "reason"), HOSTILE, ids=[r for _, r in HOSTILE])
async def test_a_hostile_champion_record_is_refused_with_its_reason(
    served: tuple[Api, ChampionWatcher], body: bytes, reason: str
) -> None:
    api, watcher = served
    api.champion = body
    with pytest.raises(WatcherError, match=reason):
        await watcher.refresh()
    assert watcher.served is None


async def test_downloads_are_capped_by_the_record_and_timed_by_their_size(
    served: tuple[Api, ChampionWatcher], artifact: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, watcher = served
    api.champion = json.dumps(_record(artifact)).encode()
    api.download = _bytes(artifact + b"more")  # longer than the record says
    with pytest.raises(WatcherError, match="passed the record's"):
        await watcher.refresh()
    api.download = _bytes(artifact[:-1] + b"!")  # the right size, the wrong bytes
    with pytest.raises(WatcherError, match="the record says"):
        await watcher.refresh()
    watcher.max_artifact_bytes = len(artifact) - 1
    with pytest.raises(WatcherError, match="over the cap"):
        await watcher.refresh()
    watcher.max_artifact_bytes = watching.MAX_ARTIFACT_BYTES

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(0, len(artifact), 100):
            await response.write(artifact[i : i + 100])
            await asyncio.sleep(0.05)
        return response

    monkeypatch.setattr(watching, "DOWNLOAD_BASE_SECONDS", 0.5)
    api.download = trickle
    with pytest.raises(WatcherError, match="given up"):
        await watcher.refresh()
    assert watcher.served is None

    api.download = _bytes(artifact)  # at last, a good one: swapped in
    assert await watcher.refresh() is True
    assert watcher.served is not None and watcher.served.version == 4
    assert await watcher.refresh() is False  # the same champion: nothing to do
    api.champion, api.status = b'{"error": "down"}', 503
    with pytest.raises(WatcherError, match="answered 503"):
        await watcher.refresh()
    assert watcher.served.version == 4  # the old model serves on


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["version", "challenger", "model", "artifact", "sha256", "size", "format", "x"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=_JSON)
def test_any_champion_answer_ends_in_a_swap_nothing_or_a_reason(answer: Any) -> None:
    api = Api()
    api.champion = json.dumps(answer).encode()
    asyncio.run(_ends_in_a_result_or_a_reason(api, ChampionWatcher.refresh))


async def _ends_in_a_result_or_a_reason(api: Api, refresh: Callable[[ChampionWatcher], Any]) -> None:
    """`refresh` against what `api` answers: True, False, or WatcherError with a reason."""
    server = TestServer(api.app())
    await server.start_server()
    watcher = ChampionWatcher(
        "segmentation", api_url=str(server.make_url("")), token=None, kafka_bootstrap="127.0.0.1:9"
    )
    watcher._http = aiohttp.ClientSession()
    try:
        try:
            assert await refresh(watcher) in (True, False)
        except WatcherError as exc:
            assert str(exc)
    finally:
        await watcher._http.close()
        await server.close()


SHADOW_HOSTILE = [
    (b"[]", "unexpected document"),
    (b'{"challenger": 4, "model": null}', "unexpected document"),
    (b'{"challenger": 1e999, "model": {"artifact": {}}}', "unexpected document"),
    (
        b'{"challenger": "4", "model": {"artifact": {"sha256": "' + b"0" * 64 + b'", "size": 1, "format": "skops"}}}',
        "not a version number",
    ),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b" " * (2 << 20), "more than"),
]


@pytest.mark.parametrize(("body", "reason"), SHADOW_HOSTILE, ids=[r for _, r in SHADOW_HOSTILE])
async def test_a_hostile_shadow_record_is_refused_with_its_reason(
    served: tuple[Api, ChampionWatcher], body: bytes, reason: str
) -> None:
    api, watcher = served
    api.shadow = body
    with pytest.raises(WatcherError, match=reason):
        await watcher.refresh_shadow()
    assert watcher.shadow is None


async def test_the_shadow_challenger_is_loaded_checked_and_dropped_when_the_api_names_none(
    served: tuple[Api, ChampionWatcher], artifact: bytes
) -> None:
    api, watcher = served
    record = _record(artifact, version=6)
    api.shadow = json.dumps({"challenger": 6, "model": record["model"]}).encode()
    api.download = _bytes(artifact[:-1] + b"!")  # the wrong bytes: refused, nothing scored
    with pytest.raises(WatcherError, match="the record says"):
        await watcher.refresh_shadow()
    assert watcher.shadow is None
    api.download = _bytes(artifact)
    assert await watcher.refresh_shadow() is True
    assert watcher.shadow is not None and watcher.shadow.version == 6
    assert await watcher.refresh_shadow() is False  # the same one: nothing to do
    api.shadow = b'{"challenger": null}'
    assert await watcher.refresh_shadow() is False and watcher.shadow is None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=_JSON)
def test_any_shadow_answer_ends_in_a_load_nothing_or_a_reason(answer: Any) -> None:
    api = Api()
    api.shadow = json.dumps({"challenger": answer} if not isinstance(answer, dict) else answer).encode()
    asyncio.run(_ends_in_a_result_or_a_reason(api, ChampionWatcher.refresh_shadow))
