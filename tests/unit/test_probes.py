"""The probe server of `fcl streams` and `fcl trainer` (contract.probes): `/livez`, `/readyz` naming
the checks that fail and nothing of their errors, `/metrics` in Prometheus text."""

from __future__ import annotations

import asyncio

import aiohttp

from fcl.contract.probes import Probes


async def test_readiness_names_what_is_not_ready_and_hides_why() -> None:
    async def ok() -> bool:
        return True

    async def refused() -> bool:
        raise ConnectionRefusedError("127.0.0.1:5432 password=hunter2")

    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    probes = Probes("127.0.0.1", 0, checks={"database": refused, "broker": ok, "artifact store": hangs})
    port = await probes.open()
    assert port > 0
    probes.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/livez") as r:
                assert r.status == 200 and (await r.json()) == {"status": "ok"}
            async with http.get("/readyz") as r:
                body = await r.text()
                assert r.status == 503
                assert (await r.json()) == {"status": "not ready", "not_ready": ["database", "artifact store"]}
                assert "hunter2" not in body and "5432" not in body
            async with http.get("/metrics") as r:
                assert r.status == 200 and "process_resident_memory_bytes" in await r.text()
    finally:
        await probes.stop()


async def test_ready_when_every_check_passes() -> None:
    async def ok() -> bool:
        return True

    probes = Probes("127.0.0.1", 0, checks={"database": ok, "broker": ok})
    port = await probes.open()
    async with probes, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http, http.get("/readyz") as r:
        assert r.status == 200 and (await r.json()) == {"status": "ready", "checked": ["database", "broker"]}
