"""fcl's Kafka clients against a real broker that only speaks SASL_SSL (SCRAM-SHA-512, a CA of
its own, made with openssl): with the right settings they create topics, produce and consume;
a wrong password or a wrong CA ends a client, and a service at its start, in one line that names
what was refused and never holds the password; a client without credentials gets nothing.
The broker is started once (about 11 s)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contract.settings import Settings
from contract.topics import Topic
from fcl.stack.common import free_port, terminate
from fcl.stack.kafka import BrokerSecurity, KafkaBroker, KafkaPorts
from fcl.stack.tls import issue as issue_certificate
from fcl.stack.tls import make_ca
from messaging.admin import ensure_topics
from messaging.client import FclProducer
from messaging.security import KafkaRefused, client_options
from tests.conftest import ROOT, RunStack

FCL = str(ROOT / ".venv" / "bin" / "fcl")
pytestmark = pytest.mark.xdist_group("secure_kafka")


class Secured:
    def __init__(self, root: Path, bootstrap: str, security: BrokerSecurity, other_ca: Path) -> None:
        self.root, self.bootstrap, self.security, self.other_ca = root, bootstrap, security, other_ca

    def env(self, **overrides: str) -> dict[str, str]:
        """FCL_* variables of a client that logs in as fcl."""
        values = {
            "FCL_KAFKA_BOOTSTRAP": self.bootstrap,
            "FCL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FCL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FCL_KAFKA_SASL_USERNAME": "fcl",
            "FCL_KAFKA_SASL_PASSWORD": self.security.users["fcl"],
            "FCL_KAFKA_SSL_CAFILE": str(self.security.ca),
        }
        return values | overrides

    def settings(self, prefix: str, **overrides: Any) -> Settings:
        fields = {k.removeprefix("FCL_").lower(): v for k, v in self.env().items()}
        return Settings(_env_file=None, topic_prefix=prefix, **(fields | overrides))


@pytest.fixture(scope="session")  # once per worker, even if the scheduler interleaves other modules
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secure-kafka")
    ca = make_ca(root / "tls")
    broker_cert = issue_certificate(ca, root / "tls", "broker")
    security = BrokerSecurity(
        ca=ca.cert,
        keystore=broker_cert.bundle(root / "tls" / "broker-keystore.pem"),
        users={"fcl-broker": secrets.token_urlsafe(18), "fcl": secrets.token_urlsafe(18)},
    )
    broker = KafkaBroker(root / "kafka", security=security)
    proc = broker.start(KafkaPorts(broker=free_port(), controller=free_port()), None, timeout=120)
    try:
        yield Secured(root, f"127.0.0.1:{proc.ports.broker}", security, make_ca(root / "other").cert)
    finally:
        terminate(proc.pid, proc.start_ticks, timeout=20)


def test_secrets_are_private_from_the_moment_they_are_written(secured: Secured) -> None:
    for path in [secured.security.keystore, secured.root / "tls" / "broker.key", secured.root / "tls" / "ca.key"]:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    config = secured.root / "kafka" / "server.properties"
    assert secured.security.users["fcl-broker"] in config.read_text() and config.stat().st_mode & 0o077 == 0


async def test_with_the_right_settings_topics_are_created_and_events_go_through(secured: Secured) -> None:
    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    settings = secured.settings(prefix)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(t.full_name(prefix) for t in Topic)
    event_id = str(uuid.uuid4())
    async with FclProducer(settings) as producer:
        await producer.send_threshold("secure-ds", "goal", event_id=event_id)
    consumer = AIOKafkaConsumer(
        settings.topic("dataset-threshold"),
        bootstrap_servers=secured.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )
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


async def test_topics_are_created_with_the_configured_durability(secured: Secured) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    settings = secured.settings(prefix, topic_partitions=2, topic_min_insync_replicas=1)
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
    assert all(len(p["replicas"]) == 1 for p in described["partitions"])
    configs = {c[0]: c[1] for c in response.resources[0][4]}
    assert configs["min.insync.replicas"] == "1"


async def test_a_wrong_password_or_a_wrong_ca_is_one_line_without_the_password(secured: Secured) -> None:
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


async def test_a_client_without_credentials_gets_nothing(secured: Secured) -> None:
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


@pytest.mark.parametrize("service", ["streams", "trainer"])
def test_a_service_with_a_wrong_password_ends_at_start_in_one_line(
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
