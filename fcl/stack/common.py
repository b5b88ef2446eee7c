"""What the broker and the database server share: errors, ports, processes, log tails."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

from fcl.contract.backoff import poll_until


class StackError(Exception):
    """A problem an operator can act on; the CLI prints it without a traceback."""


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} not found on PATH: install it ({install_hint})")
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def choose_ports(preferred: Iterable[int | None], host: str = "127.0.0.1") -> list[int]:
    """One free port per wish: the preferred one when it is free, another free one otherwise."""
    chosen: list[int] = []
    for port in preferred:
        if port and port not in chosen and port_is_free(port, host):
            chosen.append(port)
            continue
        candidate = free_port(host)
        while candidate in chosen:
            candidate = free_port(host)
        chosen.append(candidate)
    return chosen


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid`, which tells a live process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the parenthesised command name, which may hold spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    if not pid:
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return start_ticks is None or ticks == start_ticks


def terminate(pid: int, start_ticks: int | None, timeout: float) -> bool:
    """SIGTERM, wait up to `timeout`, then SIGKILL. True when the process is gone."""
    if not process_alive(pid, start_ticks):
        return True

    def gone() -> bool:
        _reap(pid)
        return not process_alive(pid, start_ticks)

    os.kill(pid, signal.SIGTERM)
    if poll_until(gone, timeout=timeout, interval=0.1):
        return True
    os.kill(pid, signal.SIGKILL)
    return poll_until(gone, timeout=5.0, interval=0.1)


def _reap(pid: int) -> None:
    # A child of this very process (tests start and stop stacks in-process) stays a zombie
    # until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def spawn_detached(cmd: list[str], log: Path) -> int:
    """Start `cmd` as a daemon and return its pid: a session of its own, stdin closed, output
    appended to `log`, and a child of init rather than of this process (the shell that starts it
    exits at once and is waited for), so it outlives this process and is never its zombie."""
    launched = subprocess.run(
        ["/bin/sh", "-c", 'setsid "$@" </dev/null >>"$FCL_DAEMON_LOG" 2>&1 & echo $!', "fcl-daemon", *cmd],
        env={**os.environ, "FCL_DAEMON_LOG": str(log)},
        capture_output=True,
        text=True,
        check=False,
    )
    if launched.returncode != 0 or not launched.stdout.strip().isdigit():
        raise StackError(f"could not start {cmd[0]}: {launched.stderr.strip()[-2000:]}")
    return int(launched.stdout.strip())


def log_tail(path: Path, lines: int = 30) -> str:
    """The log's last lines, preceded by its first few ERROR/FATAL lines (the cause of a failed
    start is often an error far above a long stack trace)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    all_lines = text.splitlines()
    if not all_lines:
        return f"(log {path} is empty)"
    errors = [line for line in all_lines[:-lines] if " ERROR " in line or " FATAL " in line][:5]
    head = ["errors logged:", *errors, "...", "last lines:"] if errors else []
    return "\n".join([*head, *all_lines[-lines:]])


def write_private(path: Path, content: str | bytes) -> None:
    """Write `content` to a new file that is mode 0600 from the moment it exists (never wider and
    then narrowed): passwords, keys, configs that hold them."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content.encode() if isinstance(content, str) else content)
