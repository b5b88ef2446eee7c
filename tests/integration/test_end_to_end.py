"""The service from outside, as a user meets it: `fcl streams`, `fcl trainer` and `fcl web` as
processes; simulated FinCoach samples produced to Kafka as plain JSON; status, validation and
champion events consumed from Kafka; HTTP calls. The events and the HTTP views must agree. At the
end, after this demo-sized run, the dashboard is loaded in headless Chromium and photographed."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from fcl.contract.backoff import wait_until
from fcl.demo import DEMO_ENV, PLAN
from fcl.trainers.simulator import simulate
from tests.conftest import ROOT, RunStack
from tests.integration.prometheus_support import Prometheus
from tests.integration.service_support import API, EventLog, Service, dumps

SCREENSHOT = ROOT / ".fcl" / "test-artifacts" / "dashboard.png"
CHECK_FIELDS = ("metric", "value", "baseline", "threshold", "direction", "passed")


async def _produce_samples(svc: Service, dataset: str, model_type: str, samples: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=svc.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        topic = svc.settings.topic("training-samples")
        for i in range(0, len(samples), 500):
            await producer.send_and_wait(
                topic,
                dumps(
                    {
                        "event_id": str(uuid.uuid4()),
                        "dataset_id": dataset,
                        "model_type": model_type,
                        "occurred_at": "2026-11-26T09:30:00Z",
                        "samples": samples[i : i + 500],
                    }
                ),
                key=dataset.encode(),
            )
    finally:
        await producer.stop()


async def _get(http: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with http.get(path) as r:
        body = await r.json()
        assert r.status == status, (path, r.status, body)
        return body


def _completed(events: EventLog, job_id: str) -> dict[str, Any] | None:
    return next((e for e in events.of("training-status") if e["job_id"] == job_id and e["status"] == "completed"), None)


async def test_samples_in_events_out_and_http_agree(stack: RunStack, tmp_path: Path) -> None:
    svc = await asyncio.to_thread(
        Service,
        stack,
        tmp_path,
        dict(DEMO_ENV) | {"FCL_LOG_FORMAT": "json", "FCL_METRICS_PORT": "0", "OTEL_TRACES_EXPORTER": "console"},
    )
    events = EventLog(svc.settings)
    prometheus: Prometheus | None = None
    try:
        await asyncio.to_thread(svc.start, "streams", "trainer", "web")
        # a real Prometheus scrapes the three processes from now on, with deploy/'s alert rules
        probes = {name: await _probe_url(svc, name) for name in ("streams", "trainer")}
        targets = {f"fcl-{n}": url.removeprefix("http://") for n, url in probes.items()}
        targets["fcl-web"] = svc.base_url.removeprefix("http://")
        prometheus = Prometheus(tmp_path, targets)
        await asyncio.to_thread(prometheus.start)
        await events.start()
        datasets = {t: f"e2e-{t}" for t in PLAN}
        for model_type, size in PLAN.items():
            await _produce_samples(svc, datasets[model_type], model_type, list(simulate(model_type, seed=1, **size)))

        def validated(types: set[str]) -> bool:
            return types <= {e["model_type"] for e in events.of("training-validation")}

        await events.wait_for("a validation event for each model type", lambda: validated(set(PLAN)), logs=svc.logs)
        # a second round of goal data: its candidate is judged against the champion
        await _produce_samples(svc, datasets["goal"], "goal", list(simulate("goal", seed=2, users=300)))
        retrain = await events.wait_for(
            "the goal retrain judged against its champion",
            lambda: next(
                (
                    e
                    for e in events.of("training-validation")
                    if e["model_type"] == "goal" and e["baseline_version"] is not None
                ),
                None,
            ),
            logs=svc.logs,
        )
        assert any(c["baseline"] is not None for c in retrain["checks"]), "a retrain has change checks vs the champion"

        async with aiohttp.ClientSession(svc.base_url) as http:
            # every validation event: the job's completed status event, the job, the validation and the version agree
            versions = (await _get(http, f"{API}/model-versions"))["versions"]
            by_key = {(v["model_type"], v["version"]): v for v in versions}
            validations = events.of("training-validation")
            assert len(validations) == len(versions) >= 5
            for event in validations:
                status = await events.wait_for(
                    "completed status event", functools.partial(_completed, events, event["job_id"])
                )
                assert status["training_event_id"] == event["training_event_id"]
                assert status["model_version"] == event["candidate_version"]
                job = await _get(http, f"{API}/training-job/{event['job_id']}")
                assert (job["status"], job["model_version"]) == ("completed", event["candidate_version"])
                assert job["timeline"][0]["status"] == "queued"
                assert any(t["status"] == "completed" for t in job["timeline"])
                seen = await _get(http, f"{API}/validation-results/{event['training_event_id']}")
                assert seen["candidate_version"] == event["candidate_version"]
                assert seen["baseline_version"] == event["baseline_version"]
                assert (seen["passed"], seen["promoted"]) == (event["passed"], event["promoted"])
                assert seen["verdict"] == event["verdict"] and (event["verdict"] == "passed") == event["promoted"]
                assert seen["metrics"] == event["metrics"]
                assert [{k: c[k] for k in CHECK_FIELDS} for c in seen["checks"]] == [
                    {k: c[k] for k in CHECK_FIELDS} for c in event["checks"]
                ]
                version = by_key[(event["model_type"], event["candidate_version"])]
                assert version["training_event_id"] == event["training_event_id"]
                assert version["parent_version"] == event["baseline_version"]
                assert re.fullmatch(r"[0-9a-f]{64}", version["artifact"]["sha256"])

            # the champion per model type: the last model-versions event == /model-versions == /training-status
            # (a first model its gate refuses leaves its type without a champion: the candidate's
            # seed and the samples that had arrived when it trained vary from run to run)
            moves = events.of("model-versions")
            promoted = [e for e in validations if e["promoted"]]
            assert len(moves) == len(promoted) >= 1, "one model-versions event per promotion"
            status_view = await _get(http, f"{API}/training-status")
            listed = await _get(http, f"{API}/model-versions")
            for model_type in PLAN:
                own = [m for m in moves if m["model_type"] == model_type]
                champion = own[-1]["version"] if own else None
                if not own:
                    refused = [
                        [c["metric"] for c in e["checks"] if not c["passed"]]
                        for e in validations
                        if e["model_type"] == model_type
                    ]
                    print(f"{model_type}: no candidate was promoted; failed checks per candidate: {refused}")
                assert listed["champions"][model_type] == champion
                assert status_view["model_types"][model_type]["champion_version"] == champion
                if champion is not None:
                    assert by_key[(model_type, champion)]["is_champion"] is True
            history = await _get(http, f"{API}/training-history?limit=100")
            assert {e["training_event_id"] for e in validations} <= {h["training_event_id"] for h in history["items"]}

            # an operator's trigger over HTTP: its job's events reach Kafka and the job view agrees
            async with http.post(
                f"{API}/trigger-training/goal", json={"priority": 9, "dataset_id": datasets["goal"]}, headers=svc.auth()
            ) as r:
                assert r.status == 202, await r.text()
                triggered = (await r.json())["job"]
            done = await events.wait_for(
                "the triggered job completes", lambda: _completed(events, triggered["job_id"]), logs=svc.logs
            )
            statuses = [e["status"] for e in events.of("training-status") if e["job_id"] == triggered["job_id"]]
            assert statuses[0] == "queued" and "in_progress" in statuses and statuses[-1] == "completed"
            job = await _get(http, f"{API}/training-job/{triggered['job_id']}")
            assert job["model_version"] == done["model_version"] and job["priority"] == 9

            # a rollback needs the token; with it, the champion goes back and the event says so
            moves = events.of("model-versions")
            twice = [t for t in PLAN if len([m for m in moves if m["model_type"] == t]) >= 2]
            model_type = twice[0] if twice else "goal"
            champion = (await _get(http, f"{API}/training-status"))["model_types"][model_type]["champion_version"]
            async with http.post(f"{API}/model-versions/{model_type}/rollback") as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
            async with http.post(f"{API}/model-versions/{model_type}/rollback", headers=svc.auth()) as r:
                body = await r.json()
                if not twice:  # every retrain was refused: there is no earlier champion to go back to
                    assert r.status == 409 and body["error"]["code"] == "no_previous_champion", body
                else:
                    assert r.status == 200, body
                    assert body["previous_version"] == champion and body["version"] != champion
                    move = await events.wait_for(
                        "the rollback's model-versions event",
                        lambda: next((m for m in events.of("model-versions") if m["reason"] == "rollback"), None),
                    )
                    assert (move["version"], move["previous_version"]) == (body["version"], champion)
                    champion = body["version"]
            assert (await _get(http, f"{API}/training-status"))["model_types"][model_type][
                "champion_version"
            ] == champion

            served = (await _get(http, f"{API}/model-versions"))["champions"]

            # every process observable: streams and trainer on their FCL_METRICS_PORT, web on its own
            figures = {}
            for name in ("streams", "trainer"):
                async with aiohttp.ClientSession(probes[name]) as probe:
                    assert (await _get(probe, "/livez"))["status"] == "ok"
                    ready = await _get(probe, "/readyz")
                    assert ready["status"] == "ready" and "database" in ready["checked"], ready
                    async with probe.get("/metrics") as r:
                        figures[name] = _samples(await r.text())
            sent = sum(len(list(simulate(t, seed=1, **size))) for t, size in PLAN.items())
            sent += len(list(simulate("goal", seed=2, users=300)))
            assert figures["streams"]["fcl_samples_stored_total"] == sent  # each stored once
            assert figures["streams"]["fcl_admissions_total"] >= len(PLAN)
            assert figures["trainer"]["fcl_job_duration_seconds_count"] >= len(validations) + 1  # and the trigger
            assert figures["trainer"]["fcl_verdicts_total"] >= len(validations) + 1
            assert figures["trainer"]["process_resident_memory_bytes"] > 0
            # the training child's peak memory (one series per model type that trained), and the
            # streams worker's consumer lag per assigned partition it has committed on
            assert figures["trainer"]["fcl_training_child_peak_rss_bytes"] > 50 * 2**20
            assert 0 <= figures["streams"]["fcl_consumer_lag"] < sent, figures["streams"]
            async with http.get("/metrics") as r:
                web_metrics = await r.text()
            for model_type, version in served.items():
                line = f'fcl_champion_version{{model_type="{model_type}"}} {float(version)}' if version else None
                assert line is None or line in web_metrics.splitlines(), (model_type, version)
            await _prometheus_saw_the_run(prometheus, http)

        # FCL_LOG_FORMAT=json: every log record of the three processes is one JSON object, and
        # the trainer's records about the triggered job name it, its dataset and its model type
        records = {name: _json_records(svc.workdir / f"{name}.log") for name in ("streams", "trainer", "web")}
        assert records["streams"] and records["trainer"], {n: len(r) for n, r in records.items()}
        about = [r for r in records["trainer"] if r.get("job_id") == triggered["job_id"]]
        assert about, records["trainer"][-5:]
        assert all((r["dataset_id"], r["model_type"]) == (datasets["goal"], "goal") for r in about)
        _one_trace_per_job(records, events)
        await asyncio.to_thread(_dashboard_in_chromium, svc, served)
    finally:
        await events.stop()
        if prometheus is not None:
            await asyncio.to_thread(prometheus.stop)
        await asyncio.to_thread(svc.stop)


async def _probe_url(svc: Service, name: str) -> str:
    """Where `fcl streams` or `fcl trainer` serves its probes (FCL_METRICS_PORT=0: it prints it)."""
    # (Faust logs what the streams worker prints: the line is inside a JSON record there)
    pattern = re.compile(rf"fcl {name}: /metrics, /livez, /readyz on (http://[\d.]+:\d+)")

    async def said() -> bool:
        return pattern.search(svc.logs()) is not None

    assert await wait_until(said, timeout=20, interval=0.2), f"fcl {name} did not say where its probes are"
    found = pattern.search(svc.logs())
    assert found is not None
    return found.group(1)


# Dashboard panels with nothing to show after a clean run: no dead letter, no failed attempt, and
# no job left waiting.
QUIET_PANELS = {"Dead letters per second, by kind", "Failed attempts in the last hour", "Oldest waiting job (s)"}


async def _prometheus_saw_the_run(prometheus: Prometheus, http: aiohttp.ClientSession) -> None:
    """Prometheus scraped all three processes; every dashboard panel that should have data has it;
    the champions it saw are the served ones; the alert rules load and evaluate, and the ones a
    healthy run must not trip are quiet. The figures each panel plots are printed."""
    everyone = {"fcl-streams": "1", "fcl-trainer": "1", "fcl-web": "1"}

    async def all_up() -> bool:  # the last scrape of each target within a few seconds
        return {r["metric"]["job"]: r["value"][1] for r in await prometheus.query('up{job=~"fcl-.*"}')} == everyone

    assert await wait_until(all_up, timeout=25, interval=0.5), prometheus.log()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "fcl-dashboard.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        [target] = panel["targets"]
        result = await prometheus.query(target["expr"])
        labels = ["/".join(v for k, v in sorted(r["metric"].items()) if k != "__name__") or "-" for r in result]
        shown = ", ".join(f"{label}={float(r['value'][1]):.4g}" for label, r in zip(labels, result, strict=True))
        print(f"panel {panel['title']!r}: {shown or 'no data'}")
        if not result:
            empty.append(panel["title"])
    assert set(empty) <= QUIET_PANELS, empty

    # the champions Prometheus saw are the API's (a retrain may promote meanwhile: its next scrapes)
    async def same_champions() -> bool:
        seen = await prometheus.query("fcl_champion_version")
        champions = {r["metric"]["model_type"]: int(float(r["value"][1])) for r in seen}
        serving = (await _get(http, f"{API}/model-versions"))["champions"]
        return champions == {t: v for t, v in serving.items() if v is not None}

    assert await wait_until(same_champions, timeout=20, interval=0.5)
    rules = {r["name"]: r for r in await prometheus.rules()}
    assert len(rules) == 6 and all(r["health"] == "ok" for r in rules.values()), rules
    for quiet in ("FclNoTrainer", "FclOutboxParked", "FclJobsFailing", "FclChampionStale"):
        assert rules[quiet]["state"] == "inactive", rules[quiet]


def _samples(text: str) -> dict[str, float]:
    """Prometheus text: the sum over labels of each sample name."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{")[0].split(" ")[0], float(line.rsplit(" ", 1)[1])
            totals[name] = totals.get(name, 0.0) + value
    return totals


def _one_trace_per_job(records: dict[str, list[dict[str, Any]]], events: EventLog) -> None:
    """OTEL_TRACES_EXPORTER=console: both processes print their spans (one JSON object a line).
    The first goal job's spans are one trace across them: fcl streams' `fcl.admit` is the parent
    of fcl trainer's `fcl.job`, whose children are the claim, the training (fit, validation) and
    the record; and every event of the job on Kafka carries that trace in its `traceparent`."""
    spans = [r for name in ("streams", "trainer") for r in records[name] if "context" in r and "name" in r]
    job_id = next(e["job_id"] for e in events.of("training-validation") if e["model_type"] == "goal")
    admit = [s for s in spans if s["name"] == "fcl.admit" and s["attributes"].get("fcl.job_id") == job_id]
    run = [s for s in spans if s["name"] == "fcl.job" and s["attributes"].get("fcl.job_id") == job_id]
    assert len(admit) == 1 and len(run) == 1, ([s["name"] for s in spans], job_id)
    trace_id = admit[0]["context"]["trace_id"]
    assert run[0]["context"]["trace_id"] == trace_id and run[0]["parent_id"] == admit[0]["context"]["span_id"]
    assert admit[0]["resource"]["attributes"]["service.name"] == "fcl-streams"
    assert run[0]["resource"]["attributes"]["service.name"] == "fcl-trainer"
    inside = {s["name"]: s for s in spans if s["parent_id"] == run[0]["context"]["span_id"]}
    assert {"fcl.claim", "fcl.train", "fcl.record"} <= set(inside), sorted(inside)
    train = inside["fcl.train"]["context"]["span_id"]
    assert {s["name"] for s in spans if s["parent_id"] == train} >= {"fcl.fit", "fcl.validate"}
    assert all(s["context"]["trace_id"] == trace_id for s in inside.values())
    of_job = [e for t in ("training-status", "training-validation") for e in events.of(t) if e["job_id"] == job_id]
    carried = {events.headers[e["event_id"]].get("traceparent", b"").decode() for e in of_job}
    assert len(of_job) >= 4 and {c.split("-")[1] for c in carried} == {trace_id.removeprefix("0x")}, carried


def _json_records(log: Path) -> list[dict[str, Any]]:
    """The JSON log records of a process's output (its stdout prints are not records); a record
    in the text format fails the test."""
    lines = log.read_text(errors="replace").splitlines()
    texts = [line for line in lines if re.match(r"\[\d{4}-\d\d-\d\d ", line)]
    assert not texts, texts[:3]
    return [json.loads(line) for line in lines if line.startswith("{")]


def _chromium() -> str:
    found = os.environ.get("FCL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium not found: `make bootstrap` installs it as root (apt-get install -y chromium)")
    return found


def chromium_flags(workdir: Path) -> list[str]:
    """Headless Chromium that runs the page's scripts for 8 s of virtual time."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={workdir / 'chromium'}",
        "--virtual-time-budget=8000",
    ]


def _dashboard_in_chromium(svc: Service, champions: dict[str, int | None]) -> None:
    """The dashboard after this demo-sized run, as headless Chromium renders it (scripts run)."""
    browser = _chromium()
    flags = chromium_flags(svc.workdir)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    subprocess.run(
        [browser, *flags, "--window-size=1400,1200", f"--screenshot={SCREENSHOT}", svc.base_url + "/"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 1200)
    assert len(png) > 50_000, "a page with charts and tables, not a blank one"
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", svc.base_url + "/"], check=True, capture_output=True, timeout=120, text=True
    ).stdout
    assert 'data-loaded="true"' in dom, dom[-2000:]
    for model_type in PLAN:
        # the champion the API serves ("none" when the gate refused every candidate of the type)
        shown = "none" if champions[model_type] is None else f"v{champions[model_type]}"
        card = re.search(
            rf'data-model-type="{model_type}"><h3>{model_type} <span class="mute">champion {shown} · (\d+) '
            r"version\(s\)",
            dom,
        )
        assert card is not None, f"no {model_type} card showing champion {shown} in the rendered page"
        assert int(card.group(1)) >= 1
        assert f'data-type="{model_type}" data-version="1"' in dom
        assert "<svg" in dom
    # the champion ledger: one row per move (all validated in this run), each naming its job
    moved = sum(1 for c in champions.values() if c is not None)
    ledger = dom.split('id="ledger">', 1)[1].split("</section>", 1)[0]
    assert ledger.count('<span class="ok">validated</span>') >= moved and ledger.count("job ") >= moved
    assert "judged against" in dom, "the validation of a version is shown check by check"
    assert 'id="drift"' in dom and "drift" in dom.split('id="drift"', 1)[1][:300], "the verdict's drift is shown"
