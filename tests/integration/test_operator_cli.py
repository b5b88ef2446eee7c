"""`fcl jobs`, `fcl versions` and `fcl history` as an operator runs them: real processes against a
real `fcl web`, tables by default and the API's JSON with --json; the champion ledger shows each
move with who made it; errors are one line."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fcl.storage.db import Database
from tests import factories
from tests.conftest import RunStack
from tests.integration.service_support import FCL, Service


@pytest.fixture
def svc(stack: RunStack, tmp_path: Path) -> Iterator[Service]:
    service = Service(stack, tmp_path)
    try:
        service.start("web")
        yield service
    finally:
        service.stop()


def fcl(svc: Service, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [FCL, *args], env=svc.env, cwd=svc.workdir, capture_output=True, text=True, timeout=60, check=False
    )
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def fcl_json(svc: Service, *args: str) -> Any:
    return json.loads(fcl(svc, *args, "--json").stdout)


async def test_operator_commands_over_http(svc: Service) -> None:
    db = Database(svc.database_url, pool_size=2)
    try:
        await factories.record_version(db, "goal", passed=True, auc=0.81)
        await factories.record_version(db, "goal", passed=True, auc=0.83)  # v2 champion, validated
        waiting = (await factories.admit(db, "ds-cli", "goal", 7)).job_id
    finally:
        await db.close()

    def run() -> None:
        listing = fcl_json(svc, "versions", "list", "goal")
        assert listing["champions"] == {"goal": 2} and [v["version"] for v in listing["versions"]] == [2, 1]
        assert [m["reason"] for m in listing["ledger"]] == ["validated", "validated"]

        move = fcl_json(svc, "versions", "promote", "goal", "1", "--reason", "v2 misbehaves in production")
        assert (move["version"], move["previous_version"], move["reason"]) == (1, 2, "manual")
        assert (
            move["note"] == "v2 misbehaves in production"
            and move["actor"].startswith("operator (claims ")
            and move["actor"].endswith("(fcl cli))")
        )
        back = fcl_json(svc, "versions", "rollback", "goal")
        assert (back["version"], back["reason"]) == (2, "rollback")

        table = fcl(svc, "versions", "list", "goal").stdout
        assert "champion ledger" in table
        ledger_lines = table.split("champion ledger (newest first):")[1].strip().splitlines()
        assert ledger_lines[0].split()[:2] == ["WHEN", "MODEL"]
        assert "v1 -> v2" in ledger_lines[1] and "rollback" in ledger_lines[1]
        assert "v2 -> v1" in ledger_lines[2] and "manual" in ledger_lines[2] and "v2 misbehaves" in ledger_lines[2]
        assert "validated" in ledger_lines[3] and "job " in ledger_lines[3]

        shown = fcl(svc, "versions", "show", "goal", "1").stdout
        assert shown.startswith("goal v1") and "verdict: passed" in shown and "roc_auc" in shown

        # The history tells a version that serves from one a later move replaced.
        history = fcl(svc, "history", "--model-type", "goal").stdout.splitlines()
        assert any(" 2 " in line and "promoted, serving" in line for line in history), history
        assert any(" 1 " in line and "promoted, since replaced (now v2)" in line for line in history), history
        assert len(fcl_json(svc, "history")["items"]) == 2

        jobs = fcl_json(svc, "jobs", "list")
        assert [j["job_id"] for j in jobs["jobs"]] == [str(waiting)]
        assert str(waiting) in fcl(svc, "jobs", "list").stdout
        assert fcl_json(svc, "jobs", "show", str(waiting))["priority"] == 7
        assert fcl_json(svc, "jobs", "cancel", str(waiting))["status"] == "cancelled"
        assert fcl_json(svc, "jobs", "retry", str(waiting))["status"] == "queued"

        # a shadow challenger: named, shown (not compared yet: no trainer here), refused for the
        # champion, cleared
        named = fcl_json(svc, "versions", "shadow", "goal", "1")
        assert (named["challenger"], named["model"]["version"], named["computed_at"]) == (1, 1, None)
        assert named["set_by"].startswith("operator (claims ")
        said = fcl(svc, "versions", "shadow", "goal", "--window", "hour").stdout
        assert said.startswith("goal: challenger v1 scored in the shadow") and "not compared yet" in said, said
        cleared = fcl(svc, "versions", "shadow", "goal", "--clear").stdout
        assert cleared.strip() == "goal: v1 no longer scored in the shadow"
        assert fcl_json(svc, "versions", "shadow", "goal")["challenger"] is None

        for args, said in (
            (("versions", "shadow", "goal", "2"), "fcl: error: 409 already_champion"),
            (("versions", "promote", "goal", "9", "--reason", "x"), "fcl: error: 404 unknown_version"),
            (("jobs", "show", "not-a-job"), "fcl: error: 'not-a-job' is not a job id"),
            (("versions", "promote", "goal", "2", "--reason", "x"), "fcl: error: 409 already_champion"),
        ):
            failed = fcl(svc, *args, ok=False)
            assert failed.returncode == 1 and failed.stderr.startswith(said), failed.stderr
            assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
        without_token = subprocess.run(
            [FCL, "versions", "rollback", "goal"],
            env={**svc.env, "FCL_API_TOKEN": "wrong"},
            cwd=svc.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert without_token.returncode == 1 and without_token.stderr.startswith("fcl: error: 401")

    await asyncio.to_thread(run)
