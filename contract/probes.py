"""`/livez`, `/readyz` and `/metrics` of `fcl streams` and `fcl trainer`, on `FCL_METRICS_PORT`
(`fcl web` serves the same on its own port).

- `/livez`: 200 while the process's event loop answers (a loop, agent or relay that ends ends the
  process at once, `contract.lifeline`, so a live process has all of them running).
- `/readyz`: 200 when every check passes (the database is at head, the broker answers, and for
  the trainer the artifact store answers); 503 with the names of the ones that do not, and no
  more (no error text, no address).
- `/metrics`: Prometheus text of the process's default registry: its own counters and
  histograms, and the Python process's CPU, memory and file descriptors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import REGISTRY, generate_latest

from fcl.contract.service import Service

Check = Callable[[], Awaitable[bool]]
CHECK_SECONDS = 3.0


async def readiness(checks: dict[str, Check]) -> tuple[int, dict[str, object]]:
    """Run every check at once (each at most CHECK_SECONDS): 200 and the names checked when all
    pass; 503 and only the names of the failing ones otherwise (no error text, no address)."""

    async def passes(check: Check) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), CHECK_SECONDS))
        except Exception:  # noqa: BLE001 - a failing check is "not ready", its error stays inside
            return False

    names = list(checks)
    results = await asyncio.gather(*(passes(checks[n]) for n in names))
    failing = [n for n, ok in zip(names, results, strict=True) if not ok]
    if failing:
        return 503, {"status": "not ready", "not_ready": failing}
    return 200, {"status": "ready", "checked": names}


class Probes(Service):
    name = "probes"
    grace = 0.0

    def __init__(self, host: str, port: int, *, checks: dict[str, Check]) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.checks = checks
        self._runner: web.AppRunner | None = None

    async def open(self) -> int:
        """Bind the port (0: any free one); returns the port bound."""
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # the port the system chose
            self.port = int(self._runner.addresses[0][1])
        return self.port

    async def run(self) -> None:
        if self._runner is None:
            await self.open()
        await self.wait_stopping()

    async def stopped(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _json(status: int, body: dict[str, object]) -> web.Response:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    async def _livez(self, _request: web.Request) -> web.Response:
        return self._json(200, {"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        status, body = await readiness(self.checks)
        return self._json(status, body)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )
