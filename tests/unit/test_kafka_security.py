"""The Kafka client options every fcl client gets from the settings (messaging.security), the
settings' checks of a security set-up that could never connect, and the warning about topics
that exist with fewer partitions or replicas than configured."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from fcl.contract.settings import Settings, refusal
from fcl.messaging.admin import short_topics
from fcl.messaging.security import client_options, faust_credentials
from fcl.stack.tls import issue, make_ca


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules in between
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca(tmp_path_factory.mktemp("ca")).cert


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings(_env_file=None)
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_ssl_carries_the_mechanism_the_user_the_password_and_a_verifying_context(ca: Path) -> None:
    settings = Settings(
        _env_file=None,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="fcl",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "fcl" and options["sasl_plain_password"] == "s3cret"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()]  # the CA file was loaded
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_mutual_tls_loads_the_client_certificate(ca: Path, tmp_path: Path) -> None:
    client = issue(make_ca(tmp_path / "ca"), tmp_path, "client")
    settings = Settings(
        _env_file=None,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=ca,
        kafka_ssl_certfile=client.cert,
        kafka_ssl_keyfile=client.key,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert faust_credentials(settings).protocol.value == "SSL"


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "SASL_SSL needs FCL_KAFKA_SASL_MECHANISM, FCL_KAFKA_SASL_USERNAME"),
        ({"kafka_ssl_certfile": "/etc/hostname"}, "FCL_KAFKA_SSL_CERTFILE and FCL_KAFKA_SSL_KEYFILE go together"),
        (
            {"kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "FCL_KAFKA_SSL_CAFILE /nonexistent/ca.pem is not a readable file",
        ),
        (
            {"topic_min_insync_replicas": 2},
            "FCL_TOPIC_MIN_INSYNC_REPLICAS 2 is more than FCL_TOPIC_REPLICATION_FACTOR 1",
        ),
        ({"kafka_security_protocol": "SASL_PLAIN"}, "FCL_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "FCL_KAFKA_SASL_MECHANISM"),
    ],
)
def test_a_security_set_up_that_could_never_connect_is_refused_in_one_line(
    fields: dict[str, object], said: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, kafka_sasl_password="hunter2", **fields)  # type: ignore[arg-type]
    line = refusal(refused.value)
    assert said in line and "\n" not in line and "hunter2" not in line


def test_topics_with_fewer_partitions_or_replicas_than_configured_are_named() -> None:
    settings = Settings(_env_file=None, topic_partitions=4, topic_replication_factor=3, topic_min_insync_replicas=2)
    three = {"replicas": [1, 2, 3]}
    described = [
        {"topic": "fcl.ok", "partitions": [three] * 4},
        {"topic": "fcl.narrow", "partitions": [three] * 2},
        {"topic": "fcl.single", "partitions": [three, three, three, {"replicas": [1]}]},
    ]
    assert short_topics(settings, described) == [
        "topic fcl.narrow exists with only 2 partitions (FCL_TOPIC_PARTITIONS 4); fcl does not change it",
        "topic fcl.single exists with only 1 replicas (FCL_TOPIC_REPLICATION_FACTOR 3); fcl does not change it",
    ]


def test_an_authorization_error_is_an_outage_the_relay_waits_out_not_a_record_to_park() -> None:
    from aiokafka import errors

    from fcl.messaging.producer import is_record_error

    assert not is_record_error(errors.TopicAuthorizationFailedError())  # an ACL being changed
    assert not is_record_error(errors.KafkaConnectionError())
    assert is_record_error(errors.MessageSizeTooLargeError())  # the record itself: parked
