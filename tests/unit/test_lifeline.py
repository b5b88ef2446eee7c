"""A loop that dies ends its process with status 1 at once; one that ends while stopping does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import asyncio, sys
from fcl.contract.lifeline import exit_when_done, run_or_exit

async def boom():
    await asyncio.sleep(0.01)
    raise RuntimeError("the agent hit a bug")

async def returns():
    await asyncio.sleep(0.01)

async def main(kind, stopping):
    if kind == "task":
        task = asyncio.create_task(boom())
        exit_when_done(task, "relay", lambda: stopping)
        await asyncio.sleep(0.5)
    else:
        try:
            await run_or_exit(boom if kind == "raises" else returns, "agent", lambda: stopping)
        except RuntimeError:
            pass
    print("still alive")

asyncio.run(main(sys.argv[1], sys.argv[2] == "stopping"))
"""


@pytest.mark.parametrize("kind", ["task", "raises", "returns"])
def test_a_loop_that_ends_while_running_ends_the_process_with_status_1(kind: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), kind, "running"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1, out.stderr
    assert "still alive" not in out.stdout and "died" in out.stderr


@pytest.mark.parametrize("kind", ["task", "raises", "returns"])
def test_a_loop_that_ends_while_stopping_lets_the_process_finish(kind: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), kind, "stopping"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "still alive" in out.stdout
