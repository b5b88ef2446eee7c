"""`fcl demo`: the whole service on this machine, used from outside as a user would.

Starts the local stack (when it is not up) and migrates, starts `fcl streams`, `fcl trainer` and
`fcl web` with demo-sized thresholds and trainings, prints the dashboard URL and the API token,
feeds simulated FinCoach samples for the four model types to Kafka, prints the status and
validation events as they arrive, then shows (from the HTTP API) every model trained, validated
and versioned and a retrain judged check by check against its champion. It then keeps serving
until Ctrl-C, which stops everything it started (the stack too, when it started it)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp

from fcl.contract.backoff import wait_until
from fcl.contract.settings import load_settings
from fcl.operator import drift_summary
from fcl.stack.common import choose_ports

FCL = str(Path(sys.executable).with_name("fcl"))
API = "/coaching/continuous-learning"
# Demo-sized thresholds and trainings: everything happens within a minute or two on a laptop.
DEMO_ENV = {
    "FCL_THRESHOLD_SEGMENTATION": "300",
    "FCL_THRESHOLD_GOAL": "500",
    "FCL_THRESHOLD_SPENDING": "8000",
    "FCL_THRESHOLD_RECOMMENDATION": "15000",
    "FCL_HEARTBEAT_SECONDS": "1",
    "FCL_DRAIN_SECONDS": "2",
    "FCL_TRAINER_HYPERPARAMETERS": json.dumps(
        {
            "recommendation": {"steps": 4000, "fqe_steps": 2000},
            "spending": {"max_epochs": 4, "steps_per_epoch": 60, "hidden": 32},
            "goal": {"n_estimators": 100},
        }
    ),
}
# What each model type gets from the simulator in the first round.
PLAN: dict[str, dict[str, int]] = {
    "segmentation": {"users": 600},
    "goal": {"users": 300},
    "spending": {"users": 60, "days": 150},
    "recommendation": {"users": 500, "episodes": 2000},
}


# The same dataset ids on every run: a second `make demo` on the same database retrains against the
# champions of the first (same features), as a real deployment would.
DATASETS = {model_type: f"fincoach-{model_type}" for model_type in PLAN}


class Demo:
    def __init__(self, *, exit_when_done: bool, state_dir: Path = Path(".fcl")) -> None:
        self.exit_when_done = exit_when_done
        self.state_dir = state_dir
        self.log_dir = state_dir / "demo"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_stack = False
        self.earlier: set[tuple[str, int]] = set()  # versions made before this run (same database)
        self.stop = asyncio.Event()

    # processes -----------------------------------------------------------------------------------
    def _spawn(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([FCL, name], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    async def _ready(self, name: str, marker: str, timeout: float = 120) -> None:
        log = self.log_dir / f"{name}.log"

        async def started() -> bool:
            return marker in log.read_text(errors="replace") or self.procs[name].poll() is not None

        await wait_until(started, timeout=timeout, interval=0.2)
        if marker not in log.read_text(errors="replace"):
            raise SystemExit(f"fcl {name} did not start; the end of {log}:\n{log.read_text()[-3000:]}")

    def shutdown(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            print(f"stopped fcl {name}")
        if self.started_stack:
            from fcl.stack import LocalStack

            LocalStack(self.state_dir).down()
            print("stopped the local stack (the demo started it)")

    # the demo ------------------------------------------------------------------------------------
    async def main(self) -> None:
        """Runs the demo until it is done (and then until Ctrl-C, unless `exit_when_done`);
        Ctrl-C at any point stops it (`shutdown` then stops the processes)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        body = asyncio.create_task(self._body())
        interrupted = asyncio.create_task(self.stop.wait())
        await asyncio.wait({body, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if body.done():
            interrupted.cancel()
            body.result()  # a failure of the demo itself is raised here
            if not self.exit_when_done:
                print("Ctrl-C stops everything the demo started.")
                await self.stop.wait()
        else:
            print("\ninterrupted: stopping what the demo started ...")
            body.cancel()
            with suppress(asyncio.CancelledError):
                await body

    async def _body(self) -> None:
        from fcl.stack import LocalStack
        from fcl.storage.migrate import upgrade

        began = time.monotonic()
        stack = LocalStack(self.state_dir)
        if not (await asyncio.to_thread(stack.status)).up:
            print("starting the local stack (Apache Kafka broker, PostgreSQL server) ...")
            status = await asyncio.to_thread(stack.up)
            if not status.up:
                raise SystemExit("the local stack did not start: see `fcl stack status`")
            self.started_stack = True
        settings = load_settings()
        await asyncio.to_thread(upgrade, settings.database_url)
        print("database migrated")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        token = settings.api_token or secrets.token_urlsafe(18)
        port = choose_ports([settings.http_port])[0]  # the configured port, or a free one
        env = {**os.environ, **DEMO_ENV, "FCL_API_TOKEN": token, "FCL_HTTP_PORT": str(port)}
        self._spawn("streams", env)
        self._spawn("trainer", env)
        self._spawn("web", env)
        await asyncio.gather(
            self._ready("streams", "Worker ready"), self._ready("trainer", "ready"), self._ready("web", "fcl web:")
        )
        base = f"http://{settings.http_host}:{port}"
        async with aiohttp.ClientSession(base) as http:
            await self._healthy(http)
            async with http.get(f"{API}/model-versions") as r:
                self.earlier = {(v["model_type"], v["version"]) for v in (await r.json())["versions"]}
            if self.earlier:
                print(f"\n{len(self.earlier)} version(s) from earlier runs: this run retrains against their champions")
            print(f"\nstreams, trainer and web are running (logs in {self.log_dir}/)")
            print(f"  dashboard:  {base}/")
            print(f"  API:        {base}{API}   (OpenAPI: {base}/openapi.json)")
            print(f"  API token:  {token}")
            print(f"  try:        curl -H 'Authorization: Bearer {token}' -X POST {base}{API}/auto-trigger-ready\n")
            follower = asyncio.create_task(self._follow(settings))
            try:
                await self._round_one(settings, http)
                await self._retrain(settings, http)
            finally:
                await asyncio.sleep(1.0)  # the last events reach the terminal
                follower.cancel()
                with suppress(asyncio.CancelledError):
                    await follower
        print(f"\ndemo finished in {time.monotonic() - began:.1f} s. The dashboard stays at {base}/ (token {token}).")

    async def _healthy(self, http: aiohttp.ClientSession) -> None:
        for _ in range(100):
            with suppress(aiohttp.ClientError):
                async with http.get("/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise SystemExit("fcl web is not healthy: see .fcl/demo/web.log")

    async def _follow(self, settings: Any) -> None:
        """Print this run's status and validation events as they reach the broker."""
        from fcl.watch import watch

        jobs: set[str] = set()

        def keep(topic: str, event: dict[str, Any]) -> bool:
            if event.get("dataset_id") in DATASETS.values():
                jobs.add(str(event.get("job_id")))
                return True
            return str(event.get("job_id")) in jobs or topic == "model-versions"

        await watch(settings, out=lambda line: print("  event: " + line, flush=True), keep=keep)

    async def _send(self, settings: Any, model_type: str, seed: int, **size: int) -> int:
        from fcl.messaging.client import FclProducer
        from fcl.trainers.simulator import simulate

        samples = list(simulate(model_type, seed=seed, **size))
        async with FclProducer(settings, linger_ms=5) as producer:
            for i in range(0, len(samples), 500):
                await producer.send_samples(DATASETS[model_type], model_type, samples[i : i + 500], wait=False)
        return len(samples)

    async def _versions(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with http.get(f"{API}/model-versions") as r:
            body = await r.json()
        return [v for v in body["versions"] if (v["model_type"], v["version"]) not in self.earlier]

    async def _wait(self, http: aiohttp.ClientSession, done: Any, timeout: float) -> list[dict[str, Any]]:
        versions: list[dict[str, Any]] = []

        async def finished() -> bool:
            nonlocal versions
            versions = await self._versions(http)
            return bool(done(versions)) or self.stop.is_set()

        await wait_until(finished, timeout=timeout, interval=1.0)
        return versions

    async def _round_one(self, settings: Any, http: aiohttp.ClientSession) -> None:
        for model_type, size in PLAN.items():
            n = await self._send(settings, model_type, 1, **size)
            print(f"sent {n} simulated {model_type} samples to dataset {DATASETS[model_type]}")
        print("the thresholds are crossed: jobs train, validate and are versioned ...\n")
        versions = await self._wait(http, lambda vs: {v["model_type"] for v in vs} >= set(PLAN), timeout=600)
        header = f"{'model type':<15} {'version':>7}  {'vs champion':>11}  {'champion':<8} {'key metric':<34}"
        print(f"\n{header} verdict")
        async with http.get(f"{API}/training-status") as r:
            status = await r.json()
        for v in sorted(versions, key=lambda v: (v["model_type"], v["version"])):
            key = status["model_types"][v["model_type"]]["key_metric"]
            async with http.get(f"{API}/validation-results/{v['training_event_id']}") as r:
                validation = await r.json()
            metric = f"{key} {v['metrics'].get(key, float('nan')):.4f}"
            verdict = validation["verdict"] + (f" ({validation['message']})" if validation.get("message") else "")
            print(
                f"{v['model_type']:<15} {v['version']:>7}  {v['parent_version'] or '-'!s:>11}  "
                f"{'yes' if v['is_champion'] else 'no':<8} {metric:<34} {verdict}"
            )
        missing = set(PLAN) - {v["model_type"] for v in versions}
        if missing:
            raise SystemExit(f"no version for {', '.join(sorted(missing))} within 10 minutes: see {self.log_dir}/")

    async def _retrain(self, settings: Any, http: aiohttp.ClientSession) -> None:
        print("\na second round of goal data (new users): the candidate is judged against its champion")
        before = {v["version"] for v in await self._versions(http) if v["model_type"] == "goal"}
        await self._send(settings, "goal", 2, users=300)
        versions = await self._wait(
            http,
            lambda vs: any(
                v["model_type"] == "goal" and v["version"] not in before and v["parent_version"] is not None for v in vs
            ),
            timeout=300,
        )
        retrains = [v for v in versions if v["model_type"] == "goal" and v["version"] not in before]
        if not retrains:
            raise SystemExit(f"the goal retrain did not finish within 5 minutes: see {self.log_dir}/")
        v = retrains[-1]
        async with http.get(f"{API}/validation-results/{v['training_event_id']}") as r:
            validation = await r.json()
        print(
            f"goal version {v['version']} against champion version {validation['baseline_version']}: "
            f"{'passed, promoted' if validation['promoted'] else 'not promoted: ' + str(validation['verdict'])}"
        )
        for c in validation["checks"]:
            base = f" (champion {c['baseline']:.4f})" if c["baseline"] is not None else ""
            value = "missing" if c["value"] is None else f"{c['value']:.4f}"
            print(
                f"  {'pass' if c['passed'] else 'FAIL'}  {c['kind']:<6} {c['metric']:<26} {value}{base}  "
                f"{'≥' if c['direction'] == 'higher_is_better' else '≤'} {c['threshold']}"
            )
        info = v["info"]
        if info.get("family"):
            print(f"  family chosen by cross-validation: {info['family']} (calibration {info['calibration']})")
        print(f"  {drift_summary(validation.get('drift'))}")


def main(exit_when_done: bool = False) -> int:
    demo = Demo(exit_when_done=exit_when_done)
    try:
        asyncio.run(demo.main())
    finally:
        demo.shutdown()
    return 0
