"""`fcl migrate` as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import RunStack, create_database, drop_database

FCL = str(Path(sys.executable).with_name("fcl"))


def test_migrate_brings_a_new_database_to_head_and_back(stack: RunStack, tmp_path: Path) -> None:
    url = create_database(stack.server_url, "fcl_cli_migrate")
    try:
        up = subprocess.run(
            [FCL, "migrate", "--database-url", url], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert up.returncode == 0, up.stderr
        assert "database at head" in up.stdout
        down = subprocess.run(
            [FCL, "migrate", "--database-url", url, "--downgrade", "base"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert down.returncode == 0, down.stderr
        assert "downgraded to base" in down.stdout
    finally:
        drop_database(stack.server_url, "fcl_cli_migrate")


def test_migrate_without_a_database_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [FCL, "migrate", "--database-url", "postgresql+asyncpg://fcl@127.0.0.1:1/none"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stderr.startswith("fcl: error: cannot migrate the database at postgresql+asyncpg://fcl@127.0.0.1:1/none")
    assert "Traceback" not in out.stderr


def test_watch_prints_each_event_once_with_its_verdict(stack: RunStack, tmp_path: Path) -> None:
    """`fcl watch` reads the real topics: a status event (and its redelivery), a validation event
    and a champion move become three lines."""
    import asyncio
    import json
    import os
    import uuid

    from tests.integration.streams_support import create_topics, new_prefix, produce_raw

    settings = stack.settings().model_copy(update={"topic_prefix": new_prefix()})
    job = str(uuid.uuid4())
    status = {
        "event_id": "s-1",
        "job_id": job,
        "dataset_id": "ds-w",
        "model_type": "goal",
        "status": "in_progress",
        "priority": 5,
        "attempt": 2,
        "progress": 0.4,
        "message": "training",
        "error": None,
        "training_event_id": None,
        "model_version": None,
        "occurred_at": "2026-11-26T09:30:00Z",
    }
    validation = {
        "event_id": "v-1",
        "job_id": job,
        "training_event_id": str(uuid.uuid4()),
        "model_type": "goal",
        "candidate_version": 4,
        "baseline_version": 3,
        "metrics": {"roc_auc": 0.9},
        "baseline_metrics": None,
        "checks": [
            {
                "metric": "roc_auc",
                "value": 0.9,
                "baseline": None,
                "threshold": 0.6,
                "direction": "higher_is_better",
                "passed": True,
            },
            {
                "metric": "brier",
                "value": 0.2,
                "baseline": 0.1,
                "threshold": 0.05,
                "direction": "lower_is_better",
                "passed": False,
            },
        ],
        "passed": False,
        "promoted": False,
        "occurred_at": "2026-11-26T09:31:00Z",
    }
    move = {
        "event_id": "m-1",
        "model_type": "goal",
        "version": 3,
        "previous_version": 2,
        "reason": "rollback",
        "occurred_at": "2026-11-26T09:32:00Z",
    }

    async def send() -> None:
        await create_topics(settings)
        await produce_raw(
            settings, settings.topic("training-status"), [(job.encode(), json.dumps(status).encode())] * 2
        )
        await produce_raw(
            settings, settings.topic("training-validation"), [(job.encode(), json.dumps(validation).encode())]
        )
        await produce_raw(settings, settings.topic("model-versions"), [(b"goal", json.dumps(move).encode())])

    asyncio.run(send())
    env = {**os.environ, "FCL_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "FCL_TOPIC_PREFIX": settings.topic_prefix}
    out = subprocess.run(
        [FCL, "watch", "--from-beginning", "--max-events", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()[1:]  # after the "watching ..." line
    assert sorted(lines) == sorted(
        [
            f"09:30:00 job {job[:8]} goal ds-w: in_progress 40% attempt 2 (training)",
            "09:31:00 validation goal v4 vs champion v3: FAILED (brier), not promoted "
            "[roc_auc 0.9 ≥ 0.6 ok; brier 0.2 ≤ 0.05 FAIL]",
            "09:32:00 champion goal: v2 → v3 (rollback)",
        ]
    ), out.stdout


def test_every_service_refuses_a_database_not_at_head_in_one_line(stack: RunStack, tmp_path: Path) -> None:
    """Unmigrated, or one migration behind: `fcl streams`, `fcl trainer` and `fcl web` each exit
    at once with one line naming `fcl migrate` (once they warned forever, and the streams worker
    dead-lettered valid events)."""
    from fcl.storage.migrate import head, upgrade

    name = "fcl_cli_behind"
    url = create_database(stack.server_url, name)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
        env |= {"FCL_DATABASE_URL": url, "FCL_KAFKA_BOOTSTRAP": stack.kafka_bootstrap}
        for state in ("unmigrated", "behind"):
            if state == "behind":
                upgrade(url, "0006")
            for service in ("streams", "trainer", "web"):
                out = subprocess.run([FCL, service], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
                assert out.returncode == 2, (service, out.stderr)
                assert out.stderr.strip().count("\n") == 0, (service, out.stderr)
                assert "run `fcl migrate` first" in out.stderr and f"not {head()}" in out.stderr
                assert ("at revision 0006" in out.stderr) == (state == "behind"), out.stderr
    finally:
        drop_database(stack.server_url, name)
