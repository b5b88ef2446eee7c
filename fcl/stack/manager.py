"""`fcl stack up|down|status`: the local broker, database server and object store as one unit.

Everything lives under one state folder (`.fcl` by default): `stack/state.json` records what
was started (pids with their kernel start times, ports, cluster id), so `down` stops exactly
those processes and `up` twice is harmless. `stack.env` is what every `fcl` command reads.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fcl.stack.common import StackError, choose_ports, process_alive, terminate, write_private
from fcl.stack.kafka import (
    KAFKA_VERSION,
    BrokerSecurity,
    KafkaBroker,
    KafkaPorts,
    KafkaProcess,
    broker_answers,
    jars_dir,
    require_java,
    start_cluster,
)
from fcl.stack.objectstore import (
    ARTIFACT_PREFIX,
    BUCKET,
    REGION,
    STOP_SECONDS,
    Credentials,
    SeaweedPorts,
    SeaweedProcess,
    SeaweedServer,
    artifact_store,
    weed_version,
)
from fcl.stack.postgres import DATABASE, ROLE, PostgresServer, ServerSecurity, find_bindir, server_version
from fcl.stack.tls import Certificate, make_ca
from fcl.stack.tls import issue as issue_certificate
from fcl.storage.artifacts import ArtifactError

PREFERRED_KAFKA_PORT = 9092
PREFERRED_CONTROLLER_PORT = 9093
PREFERRED_POSTGRES_PORT = 5432


@dataclass(frozen=True, kw_only=True)
class ComponentStatus:
    name: str
    running: bool
    answering: bool
    pid: int | None
    address: str | None
    version: str | None
    detail: str = ""
    node_id: int | None = None  # a Kafka node's id in its cluster

    def line(self) -> str:
        state = "answering" if self.answering else ("running, not answering" if self.running else "stopped")
        parts = [f"{self.name:<9}", f"{state:<10}"]
        if self.pid:
            parts.append(f"pid {self.pid}")
        if self.address:
            parts.append(self.address)
        if self.version:
            parts.append(self.version)
        if self.detail:
            parts.append(self.detail)
        return "  ".join(parts)


@dataclass(frozen=True, kw_only=True)
class StackStatus:
    kafka_nodes: list[ComponentStatus]
    postgres: ComponentStatus
    objects: ComponentStatus
    env_file: str

    @property
    def kafka(self) -> ComponentStatus:
        """The broker, or the cluster as one: running and answering when every node is, its
        address the bootstrap list clients are given."""
        if len(self.kafka_nodes) == 1:
            return self.kafka_nodes[0]
        first = self.kafka_nodes[0]
        return ComponentStatus(
            name="kafka",
            running=all(n.running for n in self.kafka_nodes),
            answering=all(n.answering for n in self.kafka_nodes),
            pid=None,
            address=",".join(n.address for n in self.kafka_nodes if n.address) or None,
            version=first.version,
            detail=f"KRaft cluster of {len(self.kafka_nodes)} nodes",
        )

    @property
    def up(self) -> bool:
        return self.kafka.answering and self.postgres.answering and self.objects.answering

    def components(self) -> list[ComponentStatus]:
        """Every server: each Kafka node, PostgreSQL, the object store."""
        return [*self.kafka_nodes, self.postgres, self.objects]

    def as_dict(self) -> dict[str, Any]:
        return {
            "servers": [asdict(c) for c in self.components()],
            "kafka": asdict(self.kafka),
            "kafka_nodes": [asdict(n) for n in self.kafka_nodes],
            "postgres": asdict(self.postgres),
            "objects": asdict(self.objects),
            "env_file": self.env_file,
            "up": self.up,
        }


def kafka_release(version: str = KAFKA_VERSION) -> str:
    """The release named inside the kafka-clients jar the broker runs from."""
    jar = jars_dir(version) / f"kafka-clients-{version}.jar"
    try:
        with zipfile.ZipFile(jar) as zf:
            props = zf.read("kafka/kafka-version.properties").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return version
    for line in props.splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    return version


class LocalStack:
    def __init__(
        self,
        state_dir: Path = Path(".fcl"),
        *,
        start_timeout: float | None = None,
        kafka_port: int = PREFERRED_KAFKA_PORT,
        controller_port: int = PREFERRED_CONTROLLER_PORT,
        postgres_port: int = PREFERRED_POSTGRES_PORT,
        secure: bool | None = None,
        kafka_brokers: int | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.preferred = {"kafka": kafka_port, "controller": controller_port, "postgres": postgres_port}
        self.stack_dir = state_dir / "stack"
        self.state_file = self.stack_dir / "state.json"
        self.env_file = state_dir / "stack.env"
        self.tls_dir = self.stack_dir / "tls"
        # `up --secure` once, and the stack stays secured (its state says so) until `down`
        saved: dict[str, str] | None = self._load().get("secrets")
        self.secrets = (saved or new_secrets()) if secure else saved
        # `up --kafka-brokers N` once, and the stack keeps N nodes: their data is formatted for N
        saved_nodes = len(kafka_state(self._load()).get("nodes", [])) or None
        self.kafka_brokers = kafka_brokers if kafka_brokers is not None else saved_nodes or 1
        if self.kafka_brokers < 1:
            raise StackError(f"--kafka-brokers must be at least 1, got {self.kafka_brokers}")
        if saved_nodes and saved_nodes != self.kafka_brokers:
            folders = ", ".join(str(self._kafka_root(i)) for i in range(1, saved_nodes + 1))
            raise StackError(
                f"this stack's Kafka data is formatted for {saved_nodes} node(s), not {self.kafka_brokers}: "
                f"use another --state-dir, or `fcl stack down` and delete {folders} and "
                f"{self.state_file} (their topics go with them)"
            )
        security = self._broker_security()
        heap = "1g" if self.kafka_brokers == 1 else "512m"
        self.kafka_nodes = [
            KafkaBroker(self._kafka_root(i), security=security, node_id=i, heap=heap)
            for i in range(1, self.kafka_brokers + 1)
        ]
        self.postgres = PostgresServer(self.stack_dir, security=self._server_security())
        self.objects = SeaweedServer(self.stack_dir / "seaweedfs")
        self.up_seconds: dict[str, float] = {}  # what each server took in the last `up`
        timeout = start_timeout or float(os.environ.get("FCL_STACK_START_TIMEOUT", "90"))
        self.start_timeout = timeout

    @property
    def kafka(self) -> KafkaBroker:
        """The first Kafka node (the only one of the default stack)."""
        return self.kafka_nodes[0]

    def _kafka_root(self, node_id: int) -> Path:
        return self.stack_dir / ("kafka" if node_id == 1 else f"kafka-{node_id}")

    # -- security (`fcl stack up --secure`) -----------------------------------------------------
    @property
    def secure(self) -> bool:
        return self.secrets is not None

    def _certificates(self) -> tuple[Certificate, Certificate]:
        """The stack's CA and the servers' certificate (made once)."""
        ca = Certificate(self.tls_dir / "ca.pem", self.tls_dir / "ca.key")
        server = Certificate(self.tls_dir / "server.pem", self.tls_dir / "server.key")
        if not (ca.cert.exists() and server.cert.exists()):
            ca = make_ca(self.tls_dir)
            server = issue_certificate(ca, self.tls_dir, "server")
        return ca, server

    def _broker_security(self) -> BrokerSecurity | None:
        if self.secrets is None:
            return None
        _, server = self._certificates()
        return BrokerSecurity(
            ca=self.tls_dir / "ca.pem",
            keystore=server.bundle(self.tls_dir / "broker-keystore.pem"),
            users={"fcl-broker": self.secrets["broker"], KAFKA_USER: self.secrets["kafka"]},
        )

    def _server_security(self) -> ServerSecurity | None:
        if self.secrets is None:
            return None
        _, server = self._certificates()
        return ServerSecurity(cert=server.cert, key=server.key, password=self.secrets["database"])

    def _kafka_options(self) -> dict[str, Any]:
        security = self.kafka.security
        return security.client_options(KAFKA_USER) if security is not None else {}

    def _pg_version(self, port: int) -> str | None:
        # secured, TCP takes TLS and a password: the stack asks over its unix socket
        host = str(self.postgres.home) if self.secure else "127.0.0.1"
        return asyncio.run(server_version(port, host=host))

    # -- state ---------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        if self.secrets is not None:
            state["secrets"] = self.secrets
        tmp = self.state_file.with_suffix(".tmp")
        write_private(tmp, json.dumps(state, indent=2, sort_keys=True))  # it holds passwords and keys
        tmp.replace(self.state_file)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        with (self.stack_dir / "lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- commands ------------------------------------------------------------------------------
    def up(self) -> StackStatus:
        require_java()
        bindir = find_bindir()
        with self._locked():
            state = self._load()
            starts: list[tuple[str, Callable[[], None]]] = [
                ("postgres", lambda: self._up_postgres(state, bindir)),
                ("kafka", lambda: self._up_kafka(state)),
                ("seaweedfs", lambda: self._up_objects(state)),
            ]
            for name, start in starts:
                began = time.perf_counter()
                start()
                self.up_seconds[name] = time.perf_counter() - began
            self._write_env(state)
        return self.status()

    def _up_postgres(self, state: dict[str, Any], bindir: Path) -> None:
        pg = state.get("postgres", {})
        if pg.get("port") and self.postgres.postmaster_pid() and self._pg_version(pg["port"]):
            return
        if self.postgres.postmaster_pid() and not process_alive(self.postgres.postmaster_pid()):
            (self.postgres.data_dir / "postmaster.pid").unlink(missing_ok=True)
        elif self.postgres.postmaster_pid():
            self.postgres.stop(bindir)  # running on a port we no longer know: restart cleanly
        (port,) = choose_ports([pg.get("port") or self.preferred["postgres"]])
        started = self.postgres.start(bindir, port, self.start_timeout)
        state["postgres"] = asdict(started)
        self._save(state)

    def _up_kafka(self, state: dict[str, Any]) -> None:
        kf = kafka_state(state)
        nodes = kf.get("nodes", [])
        alive = bool(nodes) and all(process_alive(n.get("pid"), n.get("start_ticks")) for n in nodes)
        if alive and all(self._node_answers(n, 10) for n in nodes):
            return
        for n in nodes:  # some node is gone or mute: the cluster restarts as one
            if process_alive(n.get("pid"), n.get("start_ticks")):
                terminate(n["pid"], n.get("start_ticks"), timeout=30)
        # each node its old ports (its peers know them), the first a fresh stack's preferred ones
        wished: list[int | None] = [self.preferred["kafka"], self.preferred["controller"]]
        wished += [None, None] * (self.kafka_brokers - 1)
        for i, n in enumerate(nodes):
            wished[2 * i : 2 * i + 2] = [n["broker_port"], n["controller_port"]]
        chosen = choose_ports(wished)
        ports = [KafkaPorts(broker=chosen[2 * i], controller=chosen[2 * i + 1]) for i in range(self.kafka_brokers)]
        cluster_id = kf.get("cluster_id")
        started: list[KafkaProcess]
        if self.kafka_brokers == 1:
            started = [self.kafka.start(ports[0], cluster_id, self.start_timeout)]
        else:
            started = start_cluster(self.kafka_nodes, ports, cluster_id, self.start_timeout)
        state["kafka"] = {
            "cluster_id": started[0].cluster_id,
            "version": started[0].version,
            "nodes": [
                {
                    "node_id": p.node_id,
                    "pid": p.pid,
                    "start_ticks": p.start_ticks,
                    "broker_port": p.ports.broker,
                    "controller_port": p.ports.controller,
                }
                for p in started
            ],
        }
        self._save(state)

    def _node_answers(self, node: dict[str, Any], timeout: float) -> bool:
        return asyncio.run(broker_answers(f"127.0.0.1:{node['broker_port']}", timeout, self._kafka_options()))

    def _up_objects(self, state: dict[str, Any]) -> None:
        ob = state.get("objects", {})
        credentials = Credentials(**ob["credentials"]) if ob.get("credentials") else Credentials.new()
        if process_alive(ob.get("pid"), ob.get("start_ticks")):
            try:
                self.objects.wait_ready(self._seaweed(ob), credentials, 10)
                return
            except StackError:
                terminate(ob["pid"], ob.get("start_ticks"), timeout=STOP_SECONDS)
        wished = ob.get("ports") or {}
        chosen = choose_ports([wished.get(name) for name in SeaweedPorts.names()])
        ports = SeaweedPorts(**dict(zip(SeaweedPorts.names(), chosen, strict=True)))
        started = self.objects.start(ports, credentials, self.start_timeout)
        state["objects"] = {
            "pid": started.pid,
            "start_ticks": started.start_ticks,
            "ports": asdict(ports),
            "credentials": asdict(credentials),
            "version": started.version,
        }
        self._save(state)

    @staticmethod
    def _seaweed(ob: dict[str, Any]) -> SeaweedProcess:
        return SeaweedProcess(
            pid=ob["pid"], start_ticks=ob.get("start_ticks"), ports=SeaweedPorts(**ob["ports"]), version=""
        )

    def _write_env(self, state: dict[str, Any]) -> None:
        nodes = kafka_state(state)["nodes"]
        bootstrap = ",".join(f"127.0.0.1:{n['broker_port']}" for n in nodes)
        replication = ""
        if len(nodes) > 1:  # fcl's topics as durable as the cluster allows: three copies, two in sync
            replication = (
                f"FCL_TOPIC_REPLICATION_FACTOR={min(3, len(nodes))}\n"
                f"FCL_TOPIC_MIN_INSYNC_REPLICAS={2 if len(nodes) >= 3 else 1}\n"
            )
        pg_port = state["postgres"]["port"]
        objects = state["objects"]
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        database = f"postgresql+asyncpg://{ROLE}:{ROLE}@127.0.0.1:{pg_port}/{DATABASE}"
        secured = ""
        if self.secrets is not None:
            ca = (self.tls_dir / "ca.pem").resolve()
            password_file = self.stack_dir / "database-password"
            write_private(password_file, self.secrets["database"] + "\n")
            database = (
                f"postgresql+asyncpg://{ROLE}@127.0.0.1:{pg_port}/{DATABASE}?sslmode=verify-full&sslrootcert={ca}"
            )
            secured = (
                "FCL_KAFKA_SECURITY_PROTOCOL=SASL_SSL\n"
                "FCL_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n"
                f"FCL_KAFKA_SASL_USERNAME={KAFKA_USER}\n"
                f"FCL_KAFKA_SASL_PASSWORD={self.secrets['kafka']}\n"
                f"FCL_KAFKA_SSL_CAFILE={ca}\n"
                f"FCL_DATABASE_PASSWORD_FILE={password_file.resolve()}\n"
            )
        write_private(
            self.env_file,
            "# written by `fcl stack up`; removed by `fcl stack down`\n"
            f"FCL_KAFKA_BOOTSTRAP={bootstrap}\n"
            f"{replication}"
            f"FCL_DATABASE_URL={database}\n"
            f"{secured}"
            f"FCL_ARTIFACT_URL=s3://{BUCKET}/{ARTIFACT_PREFIX}\n"
            f"FCL_S3_ENDPOINT_URL={self.objects.endpoint(SeaweedPorts(**objects['ports']))}\n"
            f"AWS_ACCESS_KEY_ID={objects['credentials']['access_key_id']}\n"
            f"AWS_SECRET_ACCESS_KEY={objects['credentials']['secret_access_key']}\n"
            f"AWS_REGION={REGION}\n",
        )

    def down(self) -> StackStatus:
        with self._locked():
            state = self._load()
            kf = state["kafka"] = kafka_state(state)
            for node in kf.get("nodes", []):
                if node.get("pid") and not terminate(node["pid"], node.get("start_ticks"), timeout=60):
                    raise StackError(f"Kafka node {node['node_id']} (pid {node['pid']}) did not stop")
                node["pid"] = None
            ob = state.get("objects", {})
            if ob.get("pid") and not terminate(ob["pid"], ob.get("start_ticks"), timeout=STOP_SECONDS):
                raise StackError(f"SeaweedFS (pid {ob['pid']}) did not stop")
            ob["pid"] = None
            if self.postgres.postmaster_pid():
                self.postgres.stop(find_bindir())
            state.get("postgres", {})["pid"] = None
            self._save(state)
            self.env_file.unlink(missing_ok=True)
            (self.stack_dir / "database-password").unlink(missing_ok=True)
            state.pop("secrets", None)  # the next plain `up` is the plain stack again
            self.secrets = None
            self._save(state)
        return self.status()

    def status(self) -> StackStatus:
        state = self._load()
        kf = kafka_state(state)
        release = f"Apache Kafka {kafka_release(kf.get('version', KAFKA_VERSION))}"
        nodes = kf.get("nodes") or [{"node_id": 1}]
        kafka_nodes = []
        for node in nodes:
            running = process_alive(node.get("pid"), node.get("start_ticks"))
            address = f"127.0.0.1:{node['broker_port']}" if node.get("broker_port") else None
            shape = "KRaft single node" if len(nodes) == 1 else f"KRaft node {node['node_id']} of {len(nodes)}"
            kafka_nodes.append(
                ComponentStatus(
                    name="kafka" if len(nodes) == 1 else f"kafka-{node['node_id']}",
                    running=running,
                    answering=bool(running and address and self._node_answers(node, 5)),
                    pid=node.get("pid") if running else None,
                    address=address,
                    version=release,
                    detail=(
                        f"{shape}{', SASL_SSL' if self.secure else ''}, cluster {kf['cluster_id']}"
                        if kf.get("cluster_id")
                        else ""
                    ),
                    node_id=node["node_id"],
                )
            )
        pg = state.get("postgres", {})
        pg_pid = self.postgres.postmaster_pid()
        pg_running = process_alive(pg_pid)
        pg_version = self._pg_version(pg["port"]) if pg_running and pg.get("port") else None
        postgres = ComponentStatus(
            name="postgres",
            running=pg_running,
            answering=pg_version is not None,
            pid=pg_pid if pg_running else None,
            address=f"127.0.0.1:{pg['port']}" if pg.get("port") else None,
            version=(
                pg_version.split(" on ")[0]
                if pg_version
                else (f"PostgreSQL {pg['version']}" if pg.get("version") else None)
            ),
            detail=f"{'TLS, scram-sha-256, ' if self.secure else ''}data {self.postgres.data_dir}",
        )
        return StackStatus(
            kafka_nodes=kafka_nodes, postgres=postgres, objects=self._objects_status(state), env_file=str(self.env_file)
        )

    def _objects_status(self, state: dict[str, Any]) -> ComponentStatus:
        ob = state.get("objects", {})
        running = process_alive(ob.get("pid"), ob.get("start_ticks"))
        address = f"127.0.0.1:{ob['ports']['s3']}" if ob.get("ports") else None
        answering = False
        if running and ob.get("credentials"):
            store = artifact_store(f"http://{address}", Credentials(**ob["credentials"]))
            try:
                store.probe()
                answering = True
            except ArtifactError:
                answering = False
        return ComponentStatus(
            name="seaweedfs",
            running=running,
            answering=answering,
            pid=ob.get("pid") if running else None,
            address=address,
            version=ob.get("version") or (weed_version() if running else None),
            detail=f"S3 bucket s3://{BUCKET}/{ARTIFACT_PREFIX}, data {self.objects.data_dir}",
        )


KAFKA_USER = "fcl"


def kafka_state(state: dict[str, Any]) -> dict[str, Any]:
    """The Kafka part of a stack's state as a list of nodes; a state written before clusters (one
    broker's pid and ports at the top) reads as its one node."""
    kf = dict(state.get("kafka", {}))
    if "nodes" not in kf and kf.get("broker_port"):
        kf["nodes"] = [
            {
                "node_id": 1,
                "pid": kf.pop("pid", None),
                "start_ticks": kf.pop("start_ticks", None),
                "broker_port": kf.pop("broker_port"),
                "controller_port": kf.pop("controller_port", None),
            }
        ]
    return kf


def new_secrets() -> dict[str, str]:
    """The secured stack's passwords: the broker's own, fcl's on Kafka, and the database's."""
    return {name: secrets.token_urlsafe(18) for name in ("broker", "kafka", "database")}
