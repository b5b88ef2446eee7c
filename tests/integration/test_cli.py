"""`fcl migrate` as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import RunStack, create_database, drop_database

FCL = str(Path(sys.executable).with_name("fcl"))


def test_migrate_brings_a_new_database_to_head_and_back(stack: RunStack, tmp_path: Path) -> None:
    url = create_database(stack.server_url, "fcl_cli_migrate")
    try:
        up = subprocess.run([FCL, "migrate", "--database-url", url], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        assert "database at head" in up.stdout
        down = subprocess.run([FCL, "migrate", "--database-url", url, "--downgrade", "base"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert "downgraded to base" in down.stdout
    finally:
        drop_database(stack.server_url, "fcl_cli_migrate")


def test_migrate_without_a_database_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run([FCL, "migrate", "--database-url", "postgresql+asyncpg://fcl@127.0.0.1:1/none"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stderr.startswith("fcl: error: cannot migrate the database at postgresql+asyncpg://fcl@127.0.0.1:1/none")
    assert "Traceback" not in out.stderr
