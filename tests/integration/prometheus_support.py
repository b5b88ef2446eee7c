"""A real Prometheus server (Debian's `prometheus`) that scrapes fcl's processes every second with
the repository's alert rules loaded, and answers PromQL over its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from fcl.contract.backoff import poll_until
from fcl.stack.common import free_port
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        """`targets`: job name -> host:port of a process's /metrics (the jobs the rules name:
        fcl-streams, fcl-trainer, fcl-web)."""
        self.workdir, self.targets = workdir, targets
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """deploy/prometheus/prometheus.yml with its Kubernetes discovery replaced by these
        processes (Debian's build has no Kubernetes discovery), scraped and evaluated every second."""
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
        config["scrape_configs"] = [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in self.targets.items()
        ]
        return config

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: apt-get install -y prometheus (make bootstrap does, as root)"
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(self.config()))
        with (self.workdir / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        assert poll_until(ready, timeout=timeout, interval=0.3), (
            f"Prometheus not ready within {timeout}s:\n{self.log()}"
        )

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        async with aiohttp.ClientSession(self.url) as http, http.get("/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    async def rules(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(self.url) as http, http.get("/api/v1/rules") as r:
            body = await r.json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]
