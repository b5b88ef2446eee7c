"""How long the local stack takes: `up` from nothing (initdb, format, start, first answer),
`up` again while it runs (must be near-instant), `down`, and `up` on existing data; then how long
Kafka alone takes to answer, one node and a three-node cluster, with the default JVM and with the
`KAFKA_OPTS` the tests give their throwaway brokers (wall time, and the brokers' CPU seconds).

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
from fcl.stack.common import free_port, terminate
from fcl.stack.kafka import KafkaBroker, KafkaPorts, start_cluster
from fcl.stack.postgres import server_home

QUICK_KAFKA = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # as tests/conftest.py gives its throwaway brokers


def timed(label: str, fn: Callable[[], object], stack: LocalStack | None = None) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stack.up_seconds.items()) if stack else ""
    print(f"{label:<40} {elapsed:7.2f} s" + (f"   ({parts})" if parts else ""))
    return elapsed


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def kafka_start(nodes: int, options: str) -> None:
    os.environ["KAFKA_OPTS"] = options
    with tempfile.TemporaryDirectory(prefix="fcl-bench-kafka-") as tmp:
        brokers = [KafkaBroker(Path(tmp) / f"k{i}", node_id=i, heap="384m") for i in range(1, nodes + 1)]
        ports = [KafkaPorts(broker=free_port(), controller=free_port()) for _ in brokers]
        began = time.perf_counter()
        procs = start_cluster(brokers, ports, None, 180)
        wall = time.perf_counter() - began
        cpu = sum(_cpu_seconds(p.pid) for p in procs)
        for p in procs:
            terminate(p.pid, p.start_ticks, timeout=30)
    label = f"kafka {nodes} node(s) answer, KAFKA_OPTS={options or '(none)'}"
    print(f"{label:<72} {wall:7.2f} s   (brokers' CPU {cpu:.1f} s)")


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
    saved = os.environ.get("KAFKA_OPTS")
    try:
        for nodes in (1, 3):
            for options in ("", QUICK_KAFKA):
                kafka_start(nodes, options)
    finally:
        if saved is None:
            os.environ.pop("KAFKA_OPTS", None)
        else:
            os.environ["KAFKA_OPTS"] = saved


if __name__ == "__main__":
    main()
