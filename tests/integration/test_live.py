"""The live loop against the real broker and database, with real processes: an app predicts through
a `ChampionWatcher` that logs its predictions, outcomes arrive on `fcl.outcomes` (some before their
prediction, some twice, some for nothing fcl knows, some hostile), `fcl streams` joins them, a
trainer worker computes the live figures, and `GET .../live` and `/metrics` serve them, equal to
the figures computed here from the same pairs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from fcl.serving.watcher import ChampionWatcher
from fcl.storage.db import Database
from fcl.trainers.simulator import FinCoachSimulator
from tests.conftest import ROOT, RunStack
from tests.integration.service_support import API, Service, make_champion, train
from tests.integration.streams_support import eventually, produce_raw, read_topic, scalar
from tests.integration.streams_support import rows as rows_of
from tests.integration.test_end_to_end import _chromium, chromium_flags

SCREENSHOT = ROOT / ".fcl" / "test-artifacts" / "dashboard-live.png"


@pytest.fixture
def svc(stack: RunStack, tmp_path: Path) -> Iterator[Service]:
    service = Service(
        stack,
        tmp_path,
        extra_env={
            "FCL_TRAINER_HYPERPARAMETERS": '{"goal": {"n_estimators": 20}}',
            "FCL_RETRAIN_SWEEP_SECONDS": "0",
            "FCL_LIVE_EVAL_SECONDS": "1",
        },
    )
    try:
        service.start("streams", "trainer", "web")
        yield service
    finally:
        service.stop()


async def _get(svc: Service, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http, http.get(path) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def test_predictions_and_outcomes_become_live_figures(svc: Service) -> None:
    db = Database(svc.database_url, pool_size=2)
    try:
        await _the_loop(svc, db)
    finally:
        await db.close()


async def _the_loop(svc: Service, db: Database) -> None:
    version = await train(svc, db, "goal-live", "goal", FinCoachSimulator(seed=61, n_users=300).goal_samples())
    await make_champion(svc, "goal", version)

    # The app: a watcher that logs what it predicts.
    new = list(FinCoachSimulator(seed=62, n_users=200).goal_samples())[:300]
    watcher = ChampionWatcher.from_settings("goal", svc.settings, api_url=svc.base_url, log_predictions=True)
    async with watcher:
        assert watcher.served is not None and watcher.served.version == version
        records = [{k: v for k, v in r.items() if k != "achieved"} for r in new]
        answers = watcher.predict(records[:200]) + watcher.predict(records[200:])
        assert all("prediction_id" in a for a in answers) and len({a["prediction_id"] for a in answers}) == 300
    assert watcher.prediction_log is not None and watcher.prediction_log.sent == 300
    assert watcher.prediction_log.dropped == 0

    outcomes_topic = svc.settings.topic("outcomes")
    predictions_topic = svc.settings.topic("predictions")
    truth = {a["prediction_id"]: r["achieved"] for a, r in zip(answers, new, strict=True)}
    known = list(truth)
    joined = known[:240]  # 60 predictions get no outcome
    items = [
        (pid.encode(), _encode({"event_id": f"o-{pid}", "prediction_id": pid, "outcome": {"achieved": truth[pid]}}))
        for pid in joined
    ]
    items += items[:5]  # redelivered: the same events
    # a second, different outcome for a prediction: counted as repeated, not joined
    items.append(
        (
            joined[0].encode(),
            _encode({"event_id": "o-again", "prediction_id": joined[0], "outcome": {"achieved": not truth[joined[0]]}}),
        )
    )
    # an outcome for a prediction fcl never hears of, and one whose prediction comes later
    items.append(
        (b"nobody", _encode({"event_id": "o-nobody", "prediction_id": "nobody", "outcome": {"achieved": True}}))
    )
    late_pid = str(uuid.uuid4())
    items.append(
        (late_pid.encode(), _encode({"event_id": "o-late", "prediction_id": late_pid, "outcome": {"achieved": True}}))
    )
    # refused: another model type than its prediction's, a shape of no model type, not JSON
    hostile = [
        (
            b"k",
            _encode(
                {
                    "event_id": "o-x1",
                    "prediction_id": joined[1],
                    "model_type": "spending",
                    "outcome": {"amounts": [{"date": "2026-12-01", "amount": 3}]},
                }
            ),
        ),
        (b"k", _encode({"event_id": "o-x2", "prediction_id": joined[2], "outcome": {"reward": 1}})),
        (b"k", b"\xff not json"),
    ]
    await produce_raw(svc.settings, outcomes_topic, items + hostile)
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 1 FROM waiting_outcomes WHERE prediction_id = :p", p=late_pid),
        what="the early outcome waits",
        logs=svc.logs,
    )
    # its prediction arrives: the pair is made; a prediction of a version that does not exist is refused
    late_prediction = {
        "event_id": f"p-{late_pid}",
        "prediction_id": late_pid,
        "model_type": "goal",
        "version": version,
        "prediction": {"probability": 0.8},
        "inputs": records[0],
        "occurred_at": None,
    }
    del late_prediction["occurred_at"]
    no_version = {**late_prediction, "event_id": "p-x", "prediction_id": "p-x", "version": version + 50}
    # posted over HTTP (an app without Kafka): the route hands them to the topic, its door does the rest
    status, body = await _call(svc, "POST", f"{API}/predictions", {"predictions": [late_prediction, no_version]})
    assert (status, body) == (202, {"accepted": 2, "topic": predictions_topic}), body
    status, body = await _call(svc, "POST", f"{API}/predictions", {"predictions": [{"event_id": "p-bad"}]})
    assert status == 422 and body["error"]["code"] == "invalid_body", body  # the schema, checked before the topic
    truth[late_pid] = True
    answers.append({"prediction_id": late_pid, "probability": 0.8})

    letters = await read_topic(svc.settings, svc.settings.topic("dead-letter"), until=lambda r: len(r) >= 4, timeout=60)
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(reasons) == 4, reasons
    assert any("is a goal prediction, not spending" in r for r in reasons), reasons
    assert any("matches no model type's outcome" in r for r in reasons), reasons
    assert any("not valid JSON" in r for r in reasons), reasons
    assert any(f"goal has no version {version + 50}" in r for r in reasons), reasons

    # The live figures, as a trainer worker computes them, equal those of the same pairs here.
    pairs = [
        (a["probability"], truth[a["prediction_id"]]) for a in answers if a["prediction_id"] in {*joined, late_pid}
    ]
    y = [t for _, t in pairs]
    p = [q for q, _ in pairs]

    async def figures_ready() -> bool:
        status, body = await _get(svc, f"{API}/model-versions/goal/{version}/live?window=hour")
        assert status == 200, body
        return body["predictions"] == 301 and body["with_outcome"] == 241

    await eventually(figures_ready, timeout=60, what="the live figures of 301 predictions", logs=svc.logs)
    status, body = await _get(svc, f"{API}/model-versions/goal/{version}/live?window=hour")
    assert body["repeated_outcomes"] == 1 and body["unknown_outcomes"] == 1, body
    assert body["metrics"]["pairs"] == 241
    assert body["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert body["metrics"]["brier"] == pytest.approx(brier_score_loss(y, p))
    assert body["outcome_share"] == pytest.approx(241 / 301)
    key = body["key"]
    assert key["metric"] == "roc_auc" and key["live"] == body["metrics"]["roc_auc"]
    validated = float(
        await scalar(db, "SELECT (metrics->>'roc_auc')::float FROM model_versions WHERE version = :v", v=version)
    )
    assert key["validated"] == pytest.approx(validated)
    drift = body["input_drift"]
    assert drift["inputs"] == 301 and set(drift["psi"]) == set(records[0]["features"]), drift
    # the same users' behaviour as in training: the inputs have not moved much
    assert drift["psi_max"] < 0.25, drift

    # refused windows and versions; the day window holds the same; /metrics exports them
    status, bad = await _get(svc, f"{API}/model-versions/goal/{version}/live?window=year")
    assert status == 422 and bad["error"]["code"], bad
    status, missing = await _get(svc, f"{API}/model-versions/goal/{version + 50}/live")
    assert status == 404, missing
    status, day = await _get(svc, f"{API}/model-versions/goal/{version}/live")
    assert status == 200 and day["window"] == "day" and day["predictions"] == 301
    status, text = await _get(svc, "/metrics")
    assert status == 200
    line = f'fcl_live_predictions{{model_type="goal",version="{version}",window="hour"}} 301.0'
    assert line in text, [x for x in text.splitlines() if x.startswith("fcl_live")]
    assert f'fcl_live_metric{{metric="roc_auc",model_type="goal",version="{version}",window="hour"}}' in text
    await asyncio.to_thread(_dashboard_shows_live, svc, body)


def _dashboard(svc: Service, shot: Path, height: int) -> str:
    """The dashboard's DOM as headless Chromium renders it, and its photograph at `shot`."""
    browser = _chromium()
    flags = chromium_flags(svc.workdir)
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", svc.base_url + "/"], check=True, capture_output=True, timeout=120, text=True
    ).stdout
    shot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [browser, *flags, f"--window-size=1400,{height}", f"--screenshot={shot}", svc.base_url + "/"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dom


def _dashboard_shows_live(svc: Service, hour: dict[str, Any]) -> None:
    """The dashboard's live section for the version (the newest, selected at first); photographed
    to .fcl/test-artifacts/dashboard-live.png."""
    dom = _dashboard(svc, SCREENSHOT, 1100)
    assert 'data-loaded="true"' in dom, dom[-2000:]
    live = dom.split('id="live-figures">', 1)[1].split("</section>", 1)[0]
    assert f"<td>last hour</td><td>{hour['predictions']}</td><td>{hour['with_outcome']} (" in live, live[:1500]
    assert f"roc_auc {hour['key']['live']:.4f} vs {hour['key']['validated']:.4f} validated" in live, live[:1500]
    assert "<td>brier</td>" in live and "<td>calibration_error</td>" in live


@pytest.fixture
def loop_svc(stack: RunStack, tmp_path: Path) -> Iterator[Service]:
    service = Service(
        stack,
        tmp_path,
        extra_env={
            "FCL_TRAINER_HYPERPARAMETERS": '{"goal": {"n_estimators": 30}}',
            "FCL_RETRAIN_SWEEP_SECONDS": "0",
            "FCL_LIVE_EVAL_SECONDS": "1",
            "FCL_LIVE_DROP_GOAL": "0.1",
            "FCL_LIVE_MIN_PAIRS": "100",
            "FCL_TRAIN_WINDOW_GOAL": "1200",  # a retraining reads the newest 1,200 samples
        },
    )
    try:
        service.start("streams", "trainer", "web")
        yield service
    finally:
        service.stop()


def _records(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "achieved"} for r in samples]


async def _outcomes(svc: Service, answers: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
    await produce_raw(
        svc.settings,
        svc.settings.topic("outcomes"),
        [
            (
                a["prediction_id"].encode(),
                _encode(
                    {
                        "event_id": str(uuid.uuid4()),
                        "prediction_id": a["prediction_id"],
                        "outcome": {"achieved": s["achieved"]},
                    }
                ),
            )
            for a, s in zip(answers, samples, strict=True)
        ],
    )


async def _live(svc: Service, version: int, predictions: int) -> dict[str, Any]:
    seen: list[Any] = []

    async def ready() -> bool:
        status, body = await _get(svc, f"{API}/model-versions/goal/{version}/live?window=hour")
        seen[:] = [status, body]
        return status == 200 and body["with_outcome"] >= predictions

    try:
        await eventually(ready, timeout=60, what=f"the live figures of v{version}")
    except AssertionError:
        raise AssertionError(f"v{version}'s live figures never showed {predictions} pairs: {seen}") from None
    return (await _get(svc, f"{API}/model-versions/goal/{version}/live?window=hour"))[1]


async def _call(svc: Service, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http,
        http.request(method, path, json=body) as r,
    ):
        return r.status, await r.json()


async def _shadow(svc: Service, challenger: int, pairs: int) -> dict[str, Any]:
    seen: list[Any] = []

    async def ready() -> bool:
        status, body = await _get(svc, f"{API}/model-versions/goal/shadow?window=hour")
        seen[:] = [status, body]
        return status == 200 and body["challenger"] == challenger and body["with_outcome"] >= pairs

    try:
        await eventually(ready, timeout=60, what=f"the shadow comparison with v{challenger}")
    except AssertionError:
        raise AssertionError(f"the shadow comparison never showed {pairs} pairs: {seen}") from None
    return (await _get(svc, f"{API}/model-versions/goal/shadow?window=hour"))[1]


def _dashboard_shows_shadow(svc: Service, compared: dict[str, Any]) -> None:
    """The dashboard's shadow section (the newest version's type, goal); photographed to
    .fcl/test-artifacts/dashboard-shadow.png."""
    dom = _dashboard(svc, SCREENSHOT.with_name("dashboard-shadow.png"), 1300)
    shown = dom.split('id="shadow-figures">', 1)[1].split("</section>", 1)[0]
    champion, challenger = compared["champion"], compared["shadow"]
    auc = (
        f"<td>roc_auc</td><td>{champion['metrics']['roc_auc']:.4f}</td><td>{challenger['metrics']['roc_auc']:.4f}</td>"
    )
    assert auc in shown, shown[:1500]
    assert "the challenger did better" in shown and f"promote goal {challenger['version']}" in shown, shown[:1500]


async def test_users_who_change_get_a_champion_retrained_for_the_reason_and_live_recovers(loop_svc: Service) -> None:
    """The whole loop: users act, the app predicts and logs, outcomes arrive, live figures appear;
    the users' behaviour shifts, the live key metric falls, a job is queued with that reason, and
    the new champion's live metric recovers."""
    svc = loop_svc
    db = Database(svc.database_url, pool_size=2)
    try:
        v1 = await train(svc, db, "goal-loop", "goal", FinCoachSimulator(seed=71, n_users=600).goal_samples())
        await make_champion(svc, "goal", v1)
        watcher = ChampionWatcher.from_settings(
            "goal", svc.settings, api_url=svc.base_url, log_predictions=True, resync_seconds=2
        )
        async with watcher:
            # users as they were: v1 does about as well live as in validation, nothing fires
            usual = FinCoachSimulator(seed=72, n_users=150).goal_samples()
            await _outcomes(svc, watcher.predict(_records(usual)), usual)
            steady = await _live(svc, v1, len(usual))
            assert steady["key"]["drop"] < 0.1, steady["key"]
            assert await scalar(db, "SELECT count(*) FROM retrain_reasons") == 0

            # the users change: their new goals reach fcl as samples, and the app's predictions of
            # them (still v1's) meet what happened
            changed = FinCoachSimulator(seed=73, n_users=600).goal_samples(shift=1.0)
            events = [
                {
                    "event_id": str(uuid.uuid4()),
                    "dataset_id": "goal-loop",
                    "model_type": "goal",
                    "samples": changed[i : i + 400],
                }
                for i in range(0, len(changed), 400)
            ]
            await produce_raw(
                svc.settings, svc.settings.topic("training-samples"), [(b"goal-loop", _encode(e)) for e in events]
            )
            now_live = FinCoachSimulator(seed=74, n_users=150).goal_samples(shift=1.0)
            await _outcomes(svc, watcher.predict(_records(now_live)), now_live)
            fallen = await _live(svc, v1, len(usual) + len(now_live))
            assert fallen["key"]["drop"] > 0.1, fallen["key"]

            async def retrained() -> bool:
                return bool(await scalar(db, "SELECT count(*) > 0 FROM retrain_reasons WHERE kind = 'live_drop'"))

            await eventually(retrained, timeout=60, what="a live_drop reason fired", logs=svc.logs)
            job = await scalar(
                db, "SELECT job_id FROM retrain_reasons WHERE kind = 'live_drop' ORDER BY fired_at LIMIT 1"
            )
            status, detail = await _get(svc, f"{API}/training-job/{job}")
            assert status == 200 and detail["reason"]["kind"] == "live_drop", detail
            reason = detail["reason"]
            assert reason["metric"] == "roc_auc" and reason["version"] == v1 and reason["live"] < reason["validated"]
            await eventually(
                lambda: scalar(db, "SELECT status IN ('completed', 'failed') FROM training_jobs WHERE id = :j", j=job),
                timeout=180,
                logs=svc.logs,
                what="the retraining ended",
            )
            assert await scalar(db, "SELECT status FROM training_jobs WHERE id = :j", j=job) == "completed"
            history = (await _get(svc, f"{API}/training-history?limit=5"))[1]["items"]
            assert any(e["job_id"] == str(job) and e["reason"]["kind"] == "live_drop" for e in history), history
            # (the day window's reason may have queued a second retraining: the newest version is
            # the one to serve next, once none is left to train)
            await eventually(
                lambda: scalar(db, "SELECT count(*) = 0 FROM training_jobs WHERE status IN ('queued', 'in_progress')"),
                timeout=180,
                logs=svc.logs,
                what="the retrainings ended",
            )
            v2 = int(await scalar(db, "SELECT max(version) FROM model_versions WHERE model_type = 'goal'"))

            # The operator wants evidence first: v1 serves, v2 is scored in the shadow on the same
            # users, and the two are compared on the same outcomes before v2 is promoted.
            await make_champion(svc, "goal", v1)
            status, body = await _call(svc, "PUT", f"{API}/model-versions/goal/shadow", {"version": v1})
            assert (status, body["error"]["code"]) == (409, "already_champion"), body
            status, body = await _call(svc, "PUT", f"{API}/model-versions/goal/shadow", {"version": v2})
            assert status == 200 and body["challenger"] == v2 and body["model"]["version"] == v2, body

            async def shadowing() -> bool:
                return watcher.shadow is not None and watcher.shadow.version == v2

            async def serving_v1() -> bool:
                return watcher.served is not None and watcher.served.version == v1

            await eventually(shadowing, timeout=60, what="the watcher scores v2 in the shadow", logs=svc.logs)
            await eventually(serving_v1, timeout=60, what="the watcher serves v1", logs=svc.logs)
            side = FinCoachSimulator(seed=76, n_users=150).goal_samples(shift=1.0)
            answers = watcher.predict(_records(side))

            async def scored() -> bool:
                return watcher.shadow_scored >= len(side)

            await eventually(scored, timeout=30, what="the challenger scored the same records")
            await _outcomes(svc, answers, side)
            compared = await _shadow(svc, v2, len(side))
            assert compared["champion"]["version"] == v1 and compared["shadow"]["version"] == v2
            comparison = compared["comparison"]
            assert comparison["metric"] == "roc_auc" and comparison["better"] == "challenger", comparison
            # the same pairs, scored by each: the figures computed here from the answers agree
            probabilities = {a["prediction_id"]: a["probability"] for a in answers}
            achieved = [bool(s["achieved"]) for s in side]
            served_auc = roc_auc_score(achieved, [probabilities[a["prediction_id"]] for a in answers])
            assert compared["champion"]["metrics"]["roc_auc"] == pytest.approx(served_auc, abs=1e-9)
            assert compared["shadow"]["metrics"]["roc_auc"] > served_auc + 0.1
            await asyncio.to_thread(_dashboard_shows_shadow, svc, compared)
            async with (
                aiohttp.ClientSession(svc.base_url, headers=svc.auth()) as http,
                http.post(
                    f"{API}/model-versions/goal/{v2}/promote",
                    json={"reason": "better in the shadow", "expected_version": v1},
                ) as r,
            ):
                moves = await rows_of(db, "SELECT seq, version, previous_version, reason, actor FROM champion_ledger")
                jobs = await rows_of(
                    db, "SELECT id, status, model_version, reason->>'kind' AS kind, created_at FROM training_jobs"
                )
                assert r.status == 200, (await r.text(), moves, jobs)

            async def swapped() -> bool:
                return watcher.served is not None and watcher.served.version == v2

            await eventually(swapped, timeout=60, what="the watcher serves v2", logs=svc.logs)
            # the same changed users, now predicted by v2: live recovers
            later = FinCoachSimulator(seed=75, n_users=150).goal_samples(shift=1.0)
            await _outcomes(svc, watcher.predict(_records(later)), later)
            recovered = await _live(svc, v2, len(later))
        v1_changed = fallen["metrics"]["roc_auc"]
        assert recovered["metrics"]["roc_auc"] > v1_changed + 0.1, (recovered["metrics"], fallen["metrics"])
        assert recovered["key"]["drop"] < 0.1, recovered["key"]
        print(
            f"live roc_auc: v{v1} before the shift {steady['metrics']['roc_auc']:.3f}, after it "
            f"{v1_changed:.3f} (validated {reason['validated']:.3f}); v{v2} on the changed users "
            f"{recovered['metrics']['roc_auc']:.3f} (validated {recovered['key']['validated']:.3f})"
        )
    finally:
        await db.close()
