"""Apache Kafka brokers (KRaft, each node a combined broker and controller) from Maven Central:
one node, or a cluster of several whose controllers form one quorum.

The jars are resolved once with Maven and cached per Kafka version under
`$XDG_CACHE_HOME/fcl/kafka/<version>` (default `~/.cache`), so every checkout on a machine
shares them and a second bootstrap needs no network.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fcl.contract.backoff import poll_until
from fcl.stack.common import (
    StackError,
    log_tail,
    process_alive,
    process_start_ticks,
    require_tool,
    spawn_detached,
    terminate,
    write_private,
)

KAFKA_VERSION = "4.1.1"
# The log4j release Kafka 4.1.x is built with; its slf4j 1.x binding matches slf4j-api 1.7.36.
LOG4J_VERSION = "2.24.3"
JAVA_HINT = "apt-get install -y openjdk-17-jre-headless (Kafka 4 needs Java 17 or newer)"
MAVEN_HINT = "apt-get install -y maven"

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="server" fileName="${sys:kafka.logs.dir}/server.log">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="INFO"/>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fcl" / "kafka"


def jars_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / version / "libs"


def ensure_jars(version: str = KAFKA_VERSION, log4j_version: str = LOG4J_VERSION) -> Path:
    """The folder of the broker's runtime jars, resolved with Maven on first use."""
    target = jars_dir(version)
    if (target / ".complete").exists():
        return target
    mvn = require_tool("mvn", MAVEN_HINT)
    require_java()
    pom = resources.files("fcl.stack").joinpath("kafka-pom.xml").read_text()
    pom = pom.replace("@KAFKA_VERSION@", version).replace("@LOG4J_VERSION@", log4j_version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "pom.xml").write_text(pom)
        out = tmp_path / "libs"
        print(f"fetching Apache Kafka {version} jars from Maven Central ...", file=sys.stderr)
        proc = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(tmp_path / "pom.xml"),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not (out / f"kafka_2.13-{version}.jar").exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise StackError(f"Maven could not resolve org.apache.kafka:kafka_2.13:{version}:\n{tail}")
        (out / ".complete").write_text(version + "\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def require_java() -> str:
    java = require_tool("java", JAVA_HINT)
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = proc.stderr + proc.stdout
    major = _java_major(text)
    if major is not None and major < 17:
        raise StackError(f"Java {major} found, Kafka 4 needs 17 or newer: {JAVA_HINT}")
    return java


def _java_major(version_text: str) -> int | None:
    for token in version_text.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and ("." in token or token.isdigit()):
            major = int(head)
            return int(token.split(".")[1]) if major == 1 else major
    return None


@dataclass(frozen=True, kw_only=True)
class KafkaPorts:
    broker: int
    controller: int


def quorum_voters(controllers: dict[int, int]) -> str:
    """`controller.quorum.voters` of a cluster whose node ids map to their controller ports."""
    return ",".join(f"{node}@127.0.0.1:{port}" for node, port in sorted(controllers.items()))


@dataclass(frozen=True, kw_only=True)
class BrokerSecurity:
    """A secured listener: SASL_SSL with SCRAM-SHA-512, the broker's certificate signed by the
    stack's own CA (`fcl.stack.tls`). `users` (name -> password) are created when the data folder
    is formatted; the broker itself logs in as `broker_user`."""

    ca: Path  # PEM: the CA clients trust
    keystore: Path  # PEM: the broker's key and certificate (mode 0600)
    users: dict[str, str]
    broker_user: str = "fcl-broker"
    mechanism: str = "SCRAM-SHA-512"

    def client_options(self, user: str) -> dict[str, Any]:
        """aiokafka options of a client that logs in as `user`."""
        from aiokafka.helpers import create_ssl_context

        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": create_ssl_context(cafile=str(self.ca)),
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": user,
            "sasl_plain_password": self.users[user],
        }


def server_properties(
    data_dir: Path,
    ports: KafkaPorts,
    security: BrokerSecurity | None = None,
    *,
    node_id: int = 1,
    controllers: dict[int, int] | None = None,
) -> str:
    """One node's configuration. `controllers` (node id -> controller port) names every node of
    the cluster; alone, the node is its own quorum. Kafka's internal topics are replicated to up
    to three nodes and need two in sync when there are three or more."""
    controllers = controllers or {node_id: ports.controller}
    replicas = str(min(3, len(controllers)))
    in_sync = "2" if len(controllers) >= 3 else "1"
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": quorum_voters(controllers),
        "listeners": f"PLAINTEXT://127.0.0.1:{ports.broker},CONTROLLER://127.0.0.1:{ports.controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports.broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir.resolve()),
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
    }
    if security is not None:
        password = security.users[security.broker_user]
        lines |= {
            "listeners": f"SASL_SSL://127.0.0.1:{ports.broker},CONTROLLER://127.0.0.1:{ports.controller}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{ports.broker}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": security.mechanism,
            "sasl.mechanism.inter.broker.protocol": security.mechanism,
            f"listener.name.sasl_ssl.{security.mechanism.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{security.broker_user}" password="{password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(security.keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(security.ca.resolve()),
            "ssl.endpoint.identification.algorithm": "https",
        }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


@dataclass(frozen=True, kw_only=True)
class KafkaProcess:
    pid: int
    start_ticks: int | None
    ports: KafkaPorts
    cluster_id: str
    version: str
    node_id: int = 1


class KafkaBroker:
    """Files of one broker under `root` (config, data, logs) and the process that serves them.
    In a cluster, `node_id` is its id and `controllers` maps every node's id to its controller
    port (`start_cluster`)."""

    def __init__(
        self,
        root: Path,
        *,
        version: str = KAFKA_VERSION,
        security: BrokerSecurity | None = None,
        node_id: int = 1,
        heap: str = "1g",
    ) -> None:
        self.root = root
        self.version = version
        self.security = security
        self.node_id = node_id
        self.heap = heap
        self.data_dir = root / "data"
        self.log_dir = root / "logs"
        self.config = root / "server.properties"
        self.log4j = root / "log4j2.xml"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.log_dir / "stdout.log"

    def _java_cmd(self, libs: Path, main: str, *args: str, heap: str = "256m") -> list[str]:
        # KAFKA_OPTS: more JVM options, as Kafka's own scripts take them (the tests' throwaway
        # brokers start with the C1 compiler only: half the CPU to start, for a slower broker)
        return [
            require_java(),
            f"-Xmx{heap}",
            *shlex.split(os.environ.get("KAFKA_OPTS", "")),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j.resolve()}",
            f"-Dkafka.logs.dir={self.log_dir.resolve()}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def prepare(self, ports: KafkaPorts, cluster_id: str | None, controllers: dict[int, int] | None = None) -> str:
        """Write the config and format the data folder once; returns the cluster id."""
        libs = ensure_jars(self.version)
        for folder in (self.data_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # the config holds the broker's own password when secured: mode 0600 from the start
        write_private(
            self.config,
            server_properties(self.data_dir, ports, self.security, node_id=self.node_id, controllers=controllers),
        )
        self.log4j.write_text(LOG4J2_XML)
        if (self.data_dir / "meta.properties").exists() and cluster_id:
            return cluster_id
        if cluster_id is None:
            out = subprocess.run(
                self._java_cmd(libs, "kafka.tools.StorageTool", "random-uuid"),
                capture_output=True,
                text=True,
                check=False,
            )
            cluster_id = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else ""
            if not cluster_id:
                raise StackError(f"kafka-storage random-uuid failed: {out.stderr.strip()[-2000:]}")
        fmt = subprocess.run(
            self._java_cmd(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config.resolve()),
                "--ignore-formatted",
                *self._scram_users(),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka's data folder failed:\n{(fmt.stdout + fmt.stderr)[-3000:]}")
        return cluster_id

    def _scram_users(self) -> list[str]:
        if self.security is None:
            return []
        mechanism = self.security.mechanism
        return [
            arg
            for name, password in self.security.users.items()
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]

    def start(self, ports: KafkaPorts, cluster_id: str | None, timeout: float) -> KafkaProcess:
        started = self.spawn(ports, self.prepare(ports, cluster_id))
        self.wait_ready(started, timeout)
        return started

    def spawn(self, ports: KafkaPorts, cluster_id: str) -> KafkaProcess:
        """Start the prepared node without waiting for it to answer."""
        cmd = self._java_cmd(jars_dir(self.version), "kafka.Kafka", str(self.config.resolve()), heap=self.heap)
        pid = spawn_detached(cmd, self.stdout_log)
        return KafkaProcess(
            pid=pid,
            start_ticks=process_start_ticks(pid),
            ports=ports,
            cluster_id=cluster_id,
            version=self.version,
            node_id=self.node_id,
        )

    def wait_ready(self, proc: KafkaProcess, timeout: float) -> None:
        """Until a real client lists topics; the log's tail when it exits or takes too long."""
        deadline = time.monotonic() + timeout

        def answers() -> bool:
            if not process_alive(proc.pid, proc.start_ticks):
                raise StackError(
                    f"the Kafka broker exited while starting; the end of {self.server_log}:\n"
                    f"{log_tail(self.server_log)}\n--- {self.stdout_log}:\n{log_tail(self.stdout_log, 15)}"
                )
            remaining = deadline - time.monotonic()
            options = self.security.client_options(self.security.broker_user) if self.security else {}
            bootstrap = f"127.0.0.1:{proc.ports.broker}"
            return remaining > 0 and asyncio.run(broker_answers(bootstrap, min(remaining, 5.0), options))

        if not poll_until(answers, timeout=timeout, interval=0.3):
            terminate(proc.pid, proc.start_ticks, timeout=10)
            raise StackError(
                f"the Kafka broker did not answer on 127.0.0.1:{proc.ports.broker} within "
                f"{timeout:.0f}s and was stopped; the end of {self.server_log}:\n{log_tail(self.server_log)}"
            )


def start_cluster(
    nodes: list[KafkaBroker], ports: list[KafkaPorts], cluster_id: str | None, timeout: float
) -> list[KafkaProcess]:
    """Format every node with one cluster id and the whole quorum, start them all, then wait until
    each answers: a node answers only once a majority of the controllers has elected a leader, so
    they cannot be started one after the other. A node that exits or does not answer stops all."""
    controllers = {node.node_id: p.controller for node, p in zip(nodes, ports, strict=True)}
    for node, p in zip(nodes, ports, strict=True):
        cluster_id = node.prepare(p, cluster_id, controllers)
    assert cluster_id is not None
    started = [node.spawn(p, cluster_id) for node, p in zip(nodes, ports, strict=True)]
    try:
        for node, proc in zip(nodes, started, strict=True):
            node.wait_ready(proc, timeout)
    except StackError:
        for proc in started:
            terminate(proc.pid, proc.start_ticks, timeout=20)
        raise
    return started


async def broker_answers(bootstrap: str, timeout: float, options: dict[str, Any] | None = None) -> bool:
    """True when the broker at `bootstrap` lists its topics to an aiokafka admin client (with the
    client `options` of a secured listener)."""
    options = options or {}
    from aiokafka.admin import AIOKafkaAdminClient

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a port that takes no connection yet: no Kafka client (and no half-open socket) at all
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    # While the broker starts, every refused connection is expected: keep aiokafka quiet.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **options)
    try:
        await asyncio.wait_for(client.start(), timeout)
        await asyncio.wait_for(client.list_topics(), timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        try:
            await asyncio.wait_for(client.close(), 5)
        except Exception:  # noqa: BLE001
            pass
        quiet.setLevel(level)
        # A connect that the timeout cancelled leaves its socket to the garbage collector: collect
        # it here, where its ResourceWarning is expected, not in whatever code runs next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
