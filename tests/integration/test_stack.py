"""`fcl stack`: status names real versions; a second stack in its own folder goes up on free
ports even when the preferred ones are taken, `up` twice is harmless, `down` leaves nothing;
missing tools and a broker that cannot start give clear errors, never a hang."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcl.contract.settings import load_settings
from fcl.stack import LocalStack, StackError
from fcl.stack.common import free_port, process_alive
from fcl.stack.kafka import KafkaBroker, KafkaPorts
from fcl.stack.postgres import server_home
from fcl.storage.artifacts import ArtifactStore, ArtifactUnavailable, S3Access
from fcl.trainers.base import Artifact
from tests.conftest import QUICK_KAFKA, ROOT, RunStack

FCL = str(Path(sys.executable).with_name("fcl"))


def test_status_names_kafka_4_and_postgresql(stack: RunStack) -> None:
    if not (ROOT / ".fcl" / "stack" / "state.json").exists():
        pytest.skip("the suite runs against a stack given by FCL_KAFKA_BOOTSTRAP/FCL_DATABASE_URL")
    out = subprocess.run([FCL, "stack", "status"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kafka_line, pg_line, objects_line = out.stdout.splitlines()[:3]
    assert kafka_line.startswith("kafka") and "answering" in kafka_line and "Apache Kafka 4." in kafka_line
    assert pg_line.startswith("postgres") and "answering" in pg_line and "PostgreSQL 1" in pg_line
    assert objects_line.startswith("seaweedfs") and "answering" in objects_line and "SeaweedFS 4." in objects_line


@pytest.fixture
def held_ports() -> Iterator[list[int]]:
    """Three ports some other program listens on."""
    socks = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        socks.append(sock)
    yield [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()


def test_second_stack_up_twice_then_down_leaves_nothing(
    tmp_path: Path, held_ports: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_OPTS", QUICK_KAFKA)
    kafka_port, controller_port, pg_port = held_ports
    local = LocalStack(
        tmp_path / "state", kafka_port=kafka_port, controller_port=controller_port, postgres_port=pg_port
    )
    try:
        first = local.up()
        assert first.up
        # The preferred ports were taken: not a failure, other free ports were used.
        assert first.kafka.address and first.kafka.address != f"127.0.0.1:{kafka_port}"
        assert first.postgres.address and first.postgres.address != f"127.0.0.1:{pg_port}"
        assert first.kafka.version and first.kafka.version.startswith("Apache Kafka 4.")
        assert first.postgres.version and first.postgres.version.startswith("PostgreSQL")
        env = (tmp_path / "state" / "stack.env").read_text()
        assert f"FCL_KAFKA_BOOTSTRAP={first.kafka.address}\n" in env
        assert f"@{first.postgres.address}/fcl\n" in env
        # The object store: its S3 endpoint and keys are in stack.env, a real S3 client writes and
        # reads in its bucket with them, and a stranger's keys are refused.
        assert f"FCL_S3_ENDPOINT_URL=http://{first.objects.address}\n" in env and "FCL_ARTIFACT_URL=s3://" in env
        settings = load_settings(env_file=tmp_path / "state" / "stack.env")
        store = ArtifactStore.from_settings(settings)
        job = uuid.uuid4()
        stored = store.write(store.key_for_job("goal", job, 1, "skops"), Artifact(b"model", "skops"))
        assert stored.path.startswith("s3://") and store.read(stored).data == b"model"
        stranger = ArtifactStore(
            settings.artifact_location,
            S3Access(endpoint=settings.s3_endpoint_url, access_key_id="x", secret_access_key="y"),
        )
        with pytest.raises(ArtifactUnavailable):
            stranger.read(stored)

        second = local.up()  # harmless: the same processes, the same addresses
        assert [c.pid for c in second.components()] == [c.pid for c in first.components()]
        assert [c.address for c in second.components()] == [c.address for c in first.components()]

        pids = [c.pid for c in first.components()]
        down = local.down()
        assert not any(c.running for c in down.components())
        assert not (tmp_path / "state" / "stack.env").exists()
        for pid in pids:
            assert pid is not None and not process_alive(pid), f"pid {pid} still runs after down"
        # No process of ours is left that names this stack's folders on its command line.
        ours = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_mentions(p, tmp_path)]
        assert ours == []
        assert local.down().up is False  # down twice is harmless too
    finally:
        local.down()
        shutil.rmtree(server_home(local.stack_dir).parent, ignore_errors=True)


def _cmdline_mentions(proc: Path, folder: Path) -> bool:
    try:
        return str(folder) in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def test_broker_that_cannot_start_reports_its_log_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_OPTS", QUICK_KAFKA)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StackError) as err:
            KafkaBroker(tmp_path / "kafka").start(KafkaPorts(broker=taken, controller=free_port()), None, timeout=60)
        elapsed = time.monotonic() - started
    message = str(err.value)
    assert "Kafka broker exited while starting" in message
    assert "Address already in use" in message or "Unable to start acceptor" in message
    assert elapsed < 60


def test_broker_that_does_not_answer_in_time_is_stopped(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    with pytest.raises(StackError, match=r"did not answer on 127\.0\.0\.1:\d+ within 1s and was stopped"):
        broker.start(KafkaPorts(broker=free_port(), controller=free_port()), None, timeout=1)
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_mentions(p, tmp_path)]
    assert leftover == []


def _path_without(tmp_path: Path, *missing: str) -> dict[str, str]:
    """An environment whose PATH has every tool of this one except `missing`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            link = bin_dir / entry.name
            if entry.name in missing or link.exists() or link.is_symlink():
                continue
            if os.access(entry, os.X_OK) and not entry.is_dir():
                link.symlink_to(entry.resolve())
    for tool in missing:
        assert not (bin_dir / tool).exists()
    return {**os.environ, "PATH": str(bin_dir)}


def test_missing_java_is_one_line_naming_the_package(tmp_path: Path) -> None:
    env = _path_without(tmp_path, "java")
    out = subprocess.run(
        [FCL, "stack", "up", "--state-dir", str(tmp_path / "s")], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "java not found" in out.stderr and "apt-get install -y openjdk-17" in out.stderr

    boot = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert boot.returncode == 1
    assert boot.stderr.strip().count("\n") == 0, boot.stderr
    assert "java not found" in boot.stderr and "openjdk" in boot.stderr


def test_missing_maven_is_one_line_when_jars_are_not_cached(tmp_path: Path) -> None:
    env = {**_path_without(tmp_path, "mvn"), "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    out = subprocess.run([FCL, "stack", "fetch"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "mvn not found" in out.stderr and "apt-get install -y maven" in out.stderr

    boot = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert boot.returncode == 1
    assert boot.stderr.strip().count("\n") == 0, boot.stderr
    assert "mvn not found" in boot.stderr and "maven" in boot.stderr
