"""A local PostgreSQL server from Debian's packages, run from a data folder of our own.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user the
package creates, and its data folder lives under `/var/tmp/fcl-<hash of the checkout>`: that user
must be able to walk every folder above its data folder, which a checkout under `/root` (mode 700)
would not allow.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from fcl.stack.common import StackError, log_tail, write_private

POSTGRES_HINT = "apt-get install -y postgresql (Debian's server package)"
SERVICE_USER = "postgres"
DATABASE = "fcl"
ROLE = "fcl"
TRUST_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"


def find_bindir() -> Path:
    """The server binaries: `FCL_PG_BINDIR`, else the newest `/usr/lib/postgresql/<major>/bin`."""
    explicit = os.environ.get("FCL_PG_BINDIR")
    candidates = (
        [explicit]
        if explicit
        else sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        )
    )
    for candidate in reversed(candidates):
        if candidate and (Path(candidate) / "pg_ctl").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("pg_ctl")
    if on_path and Path(on_path).with_name("initdb").exists():
        return Path(on_path).resolve().parent
    raise StackError(f"PostgreSQL server (initdb, pg_ctl) not found: install it ({POSTGRES_HINT})")


def running_as_root() -> bool:
    return os.geteuid() == 0


def _legacy_home(stack_root: Path) -> Path:
    digest = hashlib.sha1(str(stack_root.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"fcl-{digest}" / "postgres"


def _instance_id(stack_root: Path) -> str:
    """A random id kept in the stack folder: a new clone at the path of a deleted one gets a new
    database instead of inheriting the old one (whose artifacts went with the old checkout). A
    checkout that ran its stack before ids existed keeps its database ("legacy")."""
    marker = stack_root / "instance-id"
    try:
        return marker.read_text().strip()
    except FileNotFoundError:
        pass
    ran_before = (stack_root / "kafka").exists() and _legacy_home(stack_root).exists()
    ident = "legacy" if ran_before else uuid.uuid4().hex
    stack_root.mkdir(parents=True, exist_ok=True)
    marker.write_text(ident + "\n")
    return ident


def server_home(stack_root: Path) -> Path:
    """Where the data folder, socket and server log live."""
    if not running_as_root():
        return stack_root / "postgres"
    ident = _instance_id(stack_root)
    if ident == "legacy":
        return _legacy_home(stack_root)
    digest = hashlib.sha1(f"{stack_root.resolve()}:{ident}".encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"fcl-{digest}" / "postgres"


@dataclass(frozen=True, kw_only=True)
class PostgresProcess:
    pid: int
    port: int
    home: str
    version: str


@dataclass(frozen=True, kw_only=True)
class ServerSecurity:
    """TLS on, and a scram-sha-256 password for the role over TCP: `hostssl` only, a plaintext TCP
    connection is rejected (the unix socket, the stack's own administration, stays trusted)."""

    cert: Path  # PEM certificate signed by the stack's CA (`fcl.stack.tls`)
    key: Path  # its private key
    password: str


class PostgresServer:
    def __init__(self, stack_root: Path, *, security: ServerSecurity | None = None) -> None:
        self.home = server_home(stack_root)
        self.data_dir = self.home / "data"
        self.log_file = self.home / "server.log"
        self.security = security

    def _as_service_user(self, cmd: list[str]) -> list[str]:
        if not running_as_root():
            return cmd
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError as exc:
            raise StackError(f"no '{SERVICE_USER}' system user: install PostgreSQL ({POSTGRES_HINT})") from exc
        return ["runuser", "-u", SERVICE_USER, "--", *cmd]

    def _run(self, cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._as_service_user(cmd), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(
                f"{what} failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}\n"
                f"--- the end of {self.log_file}:\n{log_tail(self.log_file)}"
            )
        return proc

    def init(self, bindir: Path) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if running_as_root():
            pw = pwd.getpwnam(SERVICE_USER)
            os.chown(self.home, pw.pw_uid, pw.pw_gid)
            os.chmod(self.home, 0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                ROLE,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            "initdb",
        )

    def _secure(self) -> str:
        """Install the certificate, the password and the host rules; the server options for TLS."""
        assert self.security is not None
        tls = self.home / "tls"
        tls.mkdir(exist_ok=True)
        for source, name in ((self.security.cert, "server.pem"), (self.security.key, "server.key")):
            write_private(tls / name, source.read_bytes())
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 reject\n"
        )
        if running_as_root():
            pw = pwd.getpwnam(SERVICE_USER)
            for path in (tls, tls / "server.pem", tls / "server.key", self.data_dir / "pg_hba.conf"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        return f" -c ssl=on -c ssl_cert_file={tls / 'server.pem'} -c ssl_key_file={tls / 'server.key'}"

    def start(self, bindir: Path, port: int, timeout: float) -> PostgresProcess:
        self.init(bindir)
        options = (
            f"-p {port} -k {self.home} -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB"
            # Commit times of rows (pg_xact_commit_timestamp), for bench/bench_streams.py's latency.
            " -c track_commit_timestamp=on"
        )
        if self.security is not None:
            options += self._secure()
        else:  # initdb's rules (a stack secured before and brought up plain again trusts again)
            (self.data_dir / "pg_hba.conf").write_text(TRUST_HBA)
            if running_as_root():
                pw = pwd.getpwnam(SERVICE_USER)
                os.chown(self.data_dir / "pg_hba.conf", pw.pw_uid, pw.pw_gid)
        self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-o",
                options,
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            "starting PostgreSQL",
        )
        pid = self.postmaster_pid()
        if pid is None:
            raise StackError(f"PostgreSQL started but wrote no postmaster.pid:\n{log_tail(self.log_file)}")
        version = asyncio.run(self._ensure_database(port))
        return PostgresProcess(pid=pid, port=port, home=str(self.home), version=version)

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    async def _ensure_database(self, port: int) -> str:
        from fcl.storage.admin import ensure_database, set_password

        if self.security is None:
            return await ensure_database(host="127.0.0.1", port=port, user=ROLE, database=DATABASE)
        # over the unix socket (trusted): TCP needs TLS and the password this sets
        await set_password(host=str(self.home), port=port, user=ROLE, password=self.security.password)
        return await ensure_database(host=str(self.home), port=port, user=ROLE, database=DATABASE)

    def stop(self, bindir: Path) -> None:
        if self.postmaster_pid() is None:
            return
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
            "stopping PostgreSQL",
        )


async def server_version(port: int, timeout: float = 5.0, *, host: str = "127.0.0.1") -> str | None:
    """The server's version string when it answers a real client (at `host`: an address, or the
    folder of its unix socket), else None."""
    from fcl.storage.admin import server_version as answering_version

    return await answering_version(host=host, port=port, user=ROLE, timeout=timeout)
