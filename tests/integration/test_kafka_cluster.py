"""fcl against a real three-node KRaft cluster that only speaks SASL_SSL (SCRAM-SHA-512, a CA of
its own, made with openssl), the shape `fcl stack up --kafka-brokers 3 --secure` starts: with the
right settings fcl's clients create topics with three replicas and two in sync, produce and
consume; a wrong password or a wrong CA ends a client, and a service at its start, in one line
that names what was refused and never holds the password; a client without credentials gets
nothing. Triggers and samples streamed into `fcl streams` while the leader of their partitions is
SIGKILLed each become exactly one job or stored batch, and every job's `queued` event reaches the
broker. One test runs every check on one cluster (about 25 s to start on two cores)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.messaging.admin import ensure_topics
from fcl.messaging.client import FclProducer
from fcl.messaging.security import KafkaRefused, client_options
from fcl.stack.common import free_port, process_alive, terminate
from fcl.stack.kafka import BrokerSecurity, KafkaBroker, KafkaPorts, KafkaProcess, start_cluster
from fcl.stack.tls import issue as issue_certificate
from fcl.stack.tls import make_ca
from fcl.storage.db import Database
from fcl.trainers.simulator import FinCoachSimulator
from tests.conftest import QUICK_KAFKA, ROOT, RunStack

FCL = str(ROOT / ".venv" / "bin" / "fcl")
NODES = 3


class Secured:
    def __init__(
        self,
        root: Path,
        security: BrokerSecurity,
        other_ca: Path,
        nodes: list[KafkaBroker],
        procs: list[KafkaProcess],
    ) -> None:
        self.root, self.security, self.other_ca = root, security, other_ca
        self.nodes, self.procs = nodes, procs
        self.bootstrap = ",".join(f"127.0.0.1:{p.ports.broker}" for p in procs)

    def restart(self, node_id: int) -> None:
        """Start a node that was killed again, on its ports, and wait until it answers."""
        i = node_id - 1
        old = self.procs[i]
        self.procs[i] = self.nodes[i].spawn(old.ports, old.cluster_id)
        self.nodes[i].wait_ready(self.procs[i], 120)

    def env(self, **overrides: str) -> dict[str, str]:
        """FCL_* variables of a client that logs in as fcl."""
        values = {
            "FCL_KAFKA_BOOTSTRAP": self.bootstrap,
            "FCL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FCL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FCL_KAFKA_SASL_USERNAME": "fcl",
            "FCL_KAFKA_SASL_PASSWORD": self.security.users["fcl"],
            "FCL_KAFKA_SSL_CAFILE": str(self.security.ca),
            "FCL_TOPIC_REPLICATION_FACTOR": str(NODES),
            "FCL_TOPIC_MIN_INSYNC_REPLICAS": "2",
        }
        return values | overrides

    def settings(self, prefix: str, **overrides: Any) -> Settings:
        fields = {k.removeprefix("FCL_").lower(): v for k, v in self.env().items()}
        return Settings(_env_file=None, topic_prefix=prefix, **(fields | overrides))


@pytest.fixture
def secured(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Secured]:
    monkeypatch.setenv("KAFKA_OPTS", QUICK_KAFKA)
    root = tmp_path_factory.mktemp("secure-kafka")
    ca = make_ca(root / "tls")
    broker_cert = issue_certificate(ca, root / "tls", "broker")
    security = BrokerSecurity(
        ca=ca.cert,
        keystore=broker_cert.bundle(root / "tls" / "broker-keystore.pem"),
        users={"fcl-broker": secrets.token_urlsafe(18), "fcl": secrets.token_urlsafe(18)},
    )
    nodes = [KafkaBroker(root / f"kafka-{i}", security=security, node_id=i, heap="384m") for i in range(1, NODES + 1)]
    ports = [KafkaPorts(broker=free_port(), controller=free_port()) for _ in nodes]
    procs = start_cluster(nodes, ports, None, timeout=180)
    secured = Secured(root, security, make_ca(root / "other").cert, nodes, procs)
    try:
        yield secured
    finally:  # throwaway data: no controlled shutdown to wait for
        for proc in secured.procs:
            if process_alive(proc.pid, proc.start_ticks):
                os.kill(proc.pid, signal.SIGKILL)
            terminate(proc.pid, proc.start_ticks, timeout=20)


def _from_the_start(settings: Settings, topic: str) -> AIOKafkaConsumer:
    """A reader of `topic` (the contract's name) from its first record, logged in as fcl."""
    return AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )


def _secrets_are_private_from_the_moment_they_are_written(secured: Secured) -> None:
    for path in [secured.security.keystore, secured.root / "tls" / "broker.key", secured.root / "tls" / "ca.key"]:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    config = secured.root / "kafka-1" / "server.properties"
    assert secured.security.users["fcl-broker"] in config.read_text() and config.stat().st_mode & 0o077 == 0


async def _with_the_right_settings_topics_are_created_and_events_go_through(secured: Secured) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    settings = secured.settings(prefix)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(t.full_name(prefix) for t in Topic)
    event_id = str(uuid.uuid4())
    async with FclProducer(settings) as producer:
        await producer.send_threshold("secure-ds", "goal", event_id=event_id)
    consumer = _from_the_start(settings, "dataset-threshold")
    await consumer.start()
    try:
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while not got:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [json.loads(r.value) for r in records if r.value is not None]
    finally:
        await consumer.stop()
    assert [e["event_id"] for e in got] == [event_id]


async def _topics_are_created_with_the_configured_durability(secured: Secured) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    settings = secured.settings(prefix, topic_partitions=2)
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=secured.bootstrap, **client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([settings.topic("training-status")])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic("training-status"), {"min.insync.replicas": None})]
        )
    finally:
        await admin.close()
    assert len(described["partitions"]) == 2
    assert all(sorted(p["replicas"]) == list(range(1, NODES + 1)) for p in described["partitions"])
    configs = {c[0]: c[1] for c in response.resources[0][4]}
    assert configs["min.insync.replicas"] == "2"


async def _a_wrong_password_or_a_wrong_ca_is_one_line_without_the_password(secured: Secured) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    wrong = "not-" + secrets.token_urlsafe(12)
    with pytest.raises(KafkaRefused) as refused:
        await ensure_topics(secured.settings(prefix, kafka_sasl_password=wrong))
    line = str(refused.value)
    assert "refused user 'fcl'" in line and "SCRAM-SHA-512" in line and "\n" not in line
    assert wrong not in line and secured.security.users["fcl"] not in line
    with pytest.raises(KafkaRefused) as untrusted:
        async with FclProducer(secured.settings(prefix, kafka_ssl_cafile=secured.other_ca)):
            pass
    assert "certificate is not trusted" in str(untrusted.value) and str(secured.other_ca) in str(untrusted.value)


async def _a_client_without_credentials_gets_nothing(secured: Secured) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    for protocol in ("SSL", "PLAINTEXT"):
        settings = secured.settings(prefix, kafka_security_protocol=protocol)
        with pytest.raises(Exception) as failed:
            await asyncio.wait_for(ensure_topics(settings), 60)
        assert "bootstrap" in str(failed.value) or isinstance(failed.value, KafkaRefused), failed.value
    # and nothing was created on its behalf
    admin_settings = secured.settings(prefix)
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=secured.bootstrap, **client_options(admin_settings))
    await admin.start()
    try:
        assert not [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


def _a_service_with_a_wrong_password_ends_at_start_in_one_line(
    secured: Secured, stack: RunStack, tmp_path: Path, service: str
) -> None:
    wrong = "not-" + secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
    env |= secured.env(FCL_KAFKA_SASL_PASSWORD=wrong) | {
        "FCL_DATABASE_URL": stack.database_url,
        "FCL_TOPIC_PREFIX": f"sec-{uuid.uuid4().hex[:8]}.",
    }
    out = subprocess.run([FCL, service], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "refused user 'fcl'" in lines[0] and wrong not in out.stderr + out.stdout


async def _leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> the node id that leads it."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: p["leader"] for p in described["partitions"]}


async def _end_offsets(settings: Settings, topic: str) -> int:
    """How many records `topic` holds (the sum of its partitions' end offsets)."""
    partitions = [TopicPartition(topic, p) for p in await _leaders(settings, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **client_options(settings))
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def _queued_jobs(settings: Settings, expected: int, timeout: float) -> set[str]:
    """The job ids of the `queued` status events on the broker, read until `expected` or timeout."""
    consumer = _from_the_start(settings, "training-status")
    await consumer.start()
    jobs: set[str] = set()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(jobs) < expected and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                jobs |= {e["job_id"] for e in (json.loads(r.value) for r in records) if e["status"] == "queued"}
    finally:
        await consumer.stop()
    return jobs


async def _a_leader_sigkilled_mid_stream_loses_no_trigger_sample_or_status_event(
    secured: Secured, stack: RunStack, tmp_path: Path
) -> None:
    """300 triggers and 100 sample batches go to `fcl streams` through the cluster; a third of the
    way in, the node that leads most of the trigger topic's partitions is SIGKILLed and stays down
    while the rest is sent (a send that fails is sent again with the same event id, as a producer
    should). Every trigger is one job, every batch is stored once, every job's `queued` event is
    on the broker. The figures are printed."""
    from tests.integration.streams_support import StreamsEnv, eventually, rows, scalar

    prefix = f"cl-{uuid.uuid4().hex[:8]}."
    settings = secured.settings(prefix)
    await ensure_topics(settings)
    url = await asyncio.to_thread(stack.migrated_database, f"fcl_cl_{uuid.uuid4().hex[:10]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
    env |= secured.env(FCL_DATABASE_URL=url, FCL_TOPIC_PREFIX=prefix)
    senv = StreamsEnv(settings=settings, env=env, workdir=tmp_path)
    db = Database(url, pool_size=2)
    n_triggers, n_batches, per_batch = 300, 100, 5
    pool = FinCoachSimulator(seed=1, n_users=n_batches * per_batch).segmentation_samples()
    sent = {"thresholds": 0, "batches": 0, "failed_sends": 0}
    killed: int | None = None
    worker = senv.start_worker()
    try:
        await asyncio.to_thread(senv.wait_ready, worker, 180)
        async with FclProducer(settings) as producer:
            events = [
                (Topic.DATASET_THRESHOLD, f"ds-{i}", producer.threshold_event(f"ds-{i}", "goal"))
                for i in range(n_triggers)
            ]
            events += [
                (
                    Topic.TRAINING_SAMPLES,
                    f"seg-{i % 10}",
                    producer.samples_event(f"seg-{i % 10}", "segmentation", pool[i * per_batch : (i + 1) * per_batch]),
                )
                for i in range(n_batches)
            ]
            random.Random(7).shuffle(events)
            for k, (topic, key, event) in enumerate(events):
                if k == len(events) // 3:
                    leaders = await _leaders(settings, settings.topic("dataset-threshold"))
                    killed = max(set(leaders.values()), key=list(leaders.values()).count)
                    proc = secured.procs[killed - 1]
                    os.kill(proc.pid, signal.SIGKILL)
                    await asyncio.to_thread(terminate, proc.pid, proc.start_ticks, timeout=10)
                while True:  # a send that failed is sent again, the same event id
                    try:
                        await asyncio.wait_for(producer.send_event(topic, key, event), 60)
                        break
                    except (KafkaError, TimeoutError):
                        sent["failed_sends"] += 1
                sent["thresholds" if topic is Topic.DATASET_THRESHOLD else "batches"] += 1
        assert killed is not None and not process_alive(secured.procs[killed - 1].pid)
        await eventually(
            lambda: scalar(db, "SELECT count(*) = :n FROM job_triggers", n=n_triggers),
            timeout=180,
            what=f"{n_triggers} triggers admitted with node {killed} down",
            logs=senv.logs,
        )
        await eventually(
            lambda: scalar(db, "SELECT count(*) = :n FROM sample_batches", n=n_batches),
            timeout=180,
            what=f"{n_batches} sample batches stored with node {killed} down",
            logs=senv.logs,
        )
        queued = await _queued_jobs(settings, n_triggers, timeout=180)
        assert worker.poll() is None, senv.logs()
    finally:
        senv.stop_all()
        if killed is not None and not process_alive(secured.procs[killed - 1].pid):
            await asyncio.to_thread(secured.restart, killed)
    try:
        jobs = await scalar(db, "SELECT count(*) FROM training_jobs")
        datasets = await scalar(db, "SELECT count(DISTINCT dataset_id) FROM training_jobs")
        stored = await scalar(db, "SELECT count(*) FROM training_samples")
        [counts] = await rows(db, "SELECT sum(total_samples) AS total FROM datasets WHERE model_type = 'segmentation'")
        job_ids = {str(r.id) for r in await rows(db, "SELECT id FROM training_jobs")}
    finally:
        await db.close()
    on_topics = await _end_offsets(settings, settings.topic("dataset-threshold")) + await _end_offsets(
        settings, settings.topic("training-samples")
    )
    assert on_topics >= len(events)
    assert (jobs, datasets) == (n_triggers, n_triggers)
    assert stored == counts.total == n_batches * per_batch
    assert queued == job_ids, f"{len(job_ids - queued)} jobs without a queued event on the broker"
    print(
        f"leader kill: node {killed} of {NODES} SIGKILLed after {len(events) // 3} of {len(events)} events; "
        f"sent {sent['thresholds']} triggers and {sent['batches']} sample batches ({sent['failed_sends']} sends "
        f"failed and were sent again); on the topics {on_topics} records ({on_topics - len(events)} duplicated); "
        f"stored {jobs} jobs, {stored} samples in {n_batches} batches; {len(queued)} queued events on the broker"
    )


async def test_fcl_on_a_three_node_sasl_ssl_cluster(secured: Secured, stack: RunStack, tmp_path: Path) -> None:
    """Every check on one cluster, started for this test and stopped after it: a scheduler that
    spread the checks over parallel workers started one cluster per worker, and each stayed up
    (three JVMs) for the rest of the suite."""
    _secrets_are_private_from_the_moment_they_are_written(secured)
    await _with_the_right_settings_topics_are_created_and_events_go_through(secured)
    await _topics_are_created_with_the_configured_durability(secured)
    await _a_wrong_password_or_a_wrong_ca_is_one_line_without_the_password(secured)
    await _a_client_without_credentials_gets_nothing(secured)
    for folder in ("streams", "trainer", "leader"):
        (tmp_path / folder).mkdir()
    for service in ("streams", "trainer"):
        await asyncio.to_thread(
            _a_service_with_a_wrong_password_ends_at_start_in_one_line, secured, stack, tmp_path / service, service
        )
    await _a_leader_sigkilled_mid_stream_loses_no_trigger_sample_or_status_event(secured, stack, tmp_path / "leader")
