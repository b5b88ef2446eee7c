"""docker-compose.yml, checked statically (no Docker engine here): its services, ports and
environment agree with the settings the code reads and with the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from fcl.contract.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FCL_SERVICES = ("migrate", "streams", "trainer", "web")
CONTRACT_COMMANDS = {"migrate", "streams", "trainer", "web"}  # docs/contract.md, "Command line"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_services_are_kafka_postgres_and_the_fcl_processes(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "postgres", "seaweedfs", "seaweedfs-bucket", *FCL_SERVICES}
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert compose["services"]["postgres"]["image"].startswith("postgres:")
    for name in FCL_SERVICES:
        service = compose["services"][name]
        assert service["build"] == "."
        assert service["command"][0] == "fcl" and service["command"][1] in CONTRACT_COMMANDS
    assert (ROOT / "Dockerfile").exists()


def test_fcl_environment_names_are_settings(compose: dict[str, Any]) -> None:
    known = Settings.variables()
    for name in FCL_SERVICES:
        env = _env(compose["services"][name])
        assert {"FCL_KAFKA_BOOTSTRAP", "FCL_DATABASE_URL", "FCL_TOPIC_PREFIX"} <= set(env)
        assert set(env) <= known, set(env) - known
        values: dict[str, Any] = {k.removeprefix("FCL_").lower(): v for k, v in env.items() if v}
        Settings(**values, _env_file=None)


def test_artifacts_go_to_the_seaweedfs_service_with_its_keys(compose: dict[str, Any]) -> None:
    """No shared artifact volume: every fcl process reads and writes the object store, with the
    keys of the identity SeaweedFS is configured with, in the bucket the init service creates."""
    import json
    import re

    weed = compose["services"]["seaweedfs"]
    assert weed["image"].startswith("chrislusf/seaweedfs:") and "-s3" in weed["command"]
    port = next(int(a.split("=")[1]) for a in weed["command"] if a.startswith("-s3.port="))
    identities = json.loads(compose["configs"]["s3-identities"]["content"])["identities"]
    defaults = {m.group(1): m.group(2) for m in re.finditer(r"\$\{(\w+):-([^}]*)\}", json.dumps(identities))}
    bucket_cmd = " ".join(compose["services"]["seaweedfs-bucket"]["entrypoint"])
    for name in FCL_SERVICES:
        env = _env(compose["services"][name])
        assert "volumes" not in compose["services"][name]
        values: dict[str, Any] = {k.removeprefix("FCL_").lower(): v for k, v in env.items() if v}
        settings = Settings(**values, _env_file=None)
        assert settings.artifact_location.startswith("s3://")
        assert settings.s3_endpoint_url == f"http://seaweedfs:{port}"
        bucket = settings.artifact_location.removeprefix("s3://").split("/")[0]
        assert f"s3.bucket.create -name {bucket}" in bucket_cmd
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == "${" + key + ":-" + defaults[key] + "}"


def test_database_url_reaches_the_postgres_service(compose: dict[str, Any]) -> None:
    pg = _env(compose["services"]["postgres"])
    for name in FCL_SERVICES:
        url = make_url(_env(compose["services"][name])["FCL_DATABASE_URL"])
        assert url.drivername == "postgresql+asyncpg"
        assert (url.host, url.port) == ("postgres", 5432)
        assert (url.username, url.password, url.database) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
    assert "5432:5432" in compose["services"]["postgres"]["ports"]


def test_kafka_bootstrap_is_an_advertised_listener(compose: dict[str, Any]) -> None:
    kafka = _env(compose["services"]["kafka"])
    advertised = {entry.split("://", 1)[1] for entry in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in FCL_SERVICES:
        assert _env(compose["services"][name])["FCL_KAFKA_BOOTSTRAP"] in advertised
    # Host clients use the contract's default bootstrap, localhost:9092.
    assert Settings.model_fields["kafka_bootstrap"].default in advertised
    assert "9092:9092" in compose["services"]["kafka"]["ports"]


def test_web_listens_where_it_is_published(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    env = _env(web)
    assert env["FCL_HTTP_HOST"] == "0.0.0.0"
    assert f"{env['FCL_HTTP_PORT']}:{env['FCL_HTTP_PORT']}" in web["ports"]
    assert int(env["FCL_HTTP_PORT"]) == Settings.model_fields["http_port"].default
