"""How long the local stack takes: `up` from nothing (initdb, format, start, first answer),
`up` again while it runs (must be near-instant), `down`, and `up` on existing data.

Run with `make bench` or `.venv/bin/python bench/bench_stack.py`. Uses its own state folder,
so it does not touch the stack in `.fcl`.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fcl.stack import LocalStack
from fcl.stack.postgres import server_home


def timed(label: str, fn: Callable[[], object], stack: LocalStack | None = None) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stack.up_seconds.items()) if stack else ""
    print(f"{label:<40} {elapsed:7.2f} s" + (f"   ({parts})" if parts else ""))
    return elapsed


def main() -> None:
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    root = Path(tempfile.mkdtemp(prefix="fcl-bench-stack-"))
    stack = LocalStack(root / "state")
    try:
        timed("stack up (fresh: initdb + format + start)", stack.up, stack)
        timed("stack up (already running)", stack.up, stack)
        timed("stack status", stack.status)
        timed("stack down", stack.down)
        timed("stack up (existing data)", stack.up, stack)
        timed("stack down", stack.down)
    finally:
        stack.down()
        shutil.rmtree(server_home(stack.stack_dir).parent, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
