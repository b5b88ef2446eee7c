"""Settings: the contract's defaults, environment over `.fcl/stack.env`, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fcl.contract import model_types
from fcl.contract.settings import Settings, load_settings, refusal

CONTRACT_VARIABLES = {
    "FCL_KAFKA_BOOTSTRAP",
    "FCL_DATABASE_URL",
    "FCL_TOPIC_PREFIX",
    "FCL_API_TOKEN",
    "FCL_ARTIFACT_URL",
    "FCL_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "FCL_ARTIFACT_DIR",
    "FCL_HTTP_HOST",
    "FCL_HTTP_PORT",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in CONTRACT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_the_contracts(clean_env: Path) -> None:
    s = load_settings()
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.database_url == "postgresql+asyncpg://fcl:fcl@localhost:5432/fcl"
    assert s.topic_prefix == "fcl."
    assert s.api_token is None
    assert s.artifact_dir == Path(".fcl/artifacts")
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8000)
    assert s.topic("dead-letter") == "fcl.dead-letter"


def test_every_contract_variable_is_a_setting() -> None:
    assert Settings.variables() >= CONTRACT_VARIABLES


def test_stack_env_is_read_and_the_environment_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".fcl").mkdir()
    (clean_env / ".fcl" / "stack.env").write_text(
        "FCL_KAFKA_BOOTSTRAP=127.0.0.1:40001\nFCL_DATABASE_URL=postgresql+asyncpg://fcl:fcl@127.0.0.1:40002/fcl\n"
    )
    from_file = load_settings()
    assert from_file.kafka_bootstrap == "127.0.0.1:40001"
    assert from_file.database_url.endswith("@127.0.0.1:40002/fcl")

    monkeypatch.setenv("FCL_KAFKA_BOOTSTRAP", "broker.example:9092")
    monkeypatch.setenv("FCL_TOPIC_PREFIX", "run42.")
    both = load_settings()
    assert both.kafka_bootstrap == "broker.example:9092"
    assert both.database_url.endswith("@127.0.0.1:40002/fcl")
    assert both.topic("training-status") == "run42.training-status"
    assert load_settings(env_file=None).database_url.endswith("@localhost:5432/fcl")


def test_empty_token_means_unset_and_plain_postgres_urls_use_asyncpg(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FCL_API_TOKEN", "")
    monkeypatch.setenv("FCL_DATABASE_URL", "postgresql://u:p@db:5433/x")
    s = load_settings()
    assert s.api_token is None
    assert s.database_url == "postgresql+asyncpg://u:p@db:5433/x"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FCL_HTTP_PORT", "0"),
        ("FCL_HTTP_PORT", "http"),
        ("FCL_DATABASE_URL", "mysql://x"),
        ("FCL_DRIFT_MAX_PSI", "abc"),
        ("FCL_DRIFT_MAX_PSI", "-1"),
        ("FCL_DRIFT_MAX_PSI", "1e400"),  # infinity: a limit that never limits
        ("FCL_DRIFT_MAX_PSI", "nan"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("FCL_").lower()):
        load_settings()


def test_per_model_type_settings_follow_the_registry(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fcl.contract import model_types

    assert {s.threshold_variable for s in model_types.specs()} <= Settings.variables()
    defaults = load_settings()
    assert {m: defaults.default_threshold(m) for m in model_types.names()} == {
        s.name: s.default_threshold for s in model_types.specs()
    }
    (clean_env / ".fcl").mkdir()
    (clean_env / ".fcl" / "stack.env").write_text("FCL_THRESHOLD_GOAL=40\nFCL_THRESHOLD_SPENDING=70\n")
    monkeypatch.setenv("FCL_THRESHOLD_SPENDING", "80")  # the environment wins over the file
    s = load_settings()
    assert (s.default_threshold("goal"), s.default_threshold("spending")) == (40, 80)
    assert s.default_threshold("segmentation") == model_types.spec("segmentation").default_threshold
    assert load_settings(env_file=None).default_threshold("goal") == model_types.spec("goal").default_threshold
    monkeypatch.setenv("FCL_TRAINER_CAPS", '{"fraud": 1}')
    with pytest.raises(ValidationError, match="unknown model type"):
        load_settings()
    monkeypatch.setenv("FCL_TRAINER_CAPS", '{"goal": 1}')
    monkeypatch.setenv("FCL_THRESHOLD_GOAL", "0")
    with pytest.raises(ValidationError, match="at least 1"):
        load_settings()


def test_artifact_url_and_its_older_name(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FCL_ARTIFACT_URL names the store; FCL_ARTIFACT_DIR is its older name for a folder. The real
    environment wins over .fcl/stack.env under either name."""
    assert load_settings().artifact_location == ".fcl/artifacts"
    (clean_env / ".fcl").mkdir()
    (clean_env / ".fcl" / "stack.env").write_text(
        "FCL_ARTIFACT_URL=s3://fcl/artifacts\nFCL_S3_ENDPOINT_URL=http://127.0.0.1:8333\nAWS_ACCESS_KEY_ID=k\n"
    )
    from_file = load_settings()
    assert (from_file.artifact_location, from_file.s3_endpoint_url, from_file.aws_access_key_id) == (
        "s3://fcl/artifacts",
        "http://127.0.0.1:8333",
        "k",
    )
    monkeypatch.setenv("FCL_ARTIFACT_DIR", "/srv/models")
    assert load_settings().artifact_location == "/srv/models"
    monkeypatch.setenv("FCL_ARTIFACT_URL", "s3://other/prefix")
    assert load_settings().artifact_location == "s3://other/prefix"


def test_a_training_window_per_model_type(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "FCL_TRAIN_WINDOW_RECOMMENDATION" in Settings.variables()
    defaults = load_settings().windows()  # every model type has one, from its registration
    assert defaults == {s.name: s.default_window for s in model_types.specs()}
    assert defaults["recommendation"] == 500_000 and defaults["goal"] == 200_000
    (clean_env / ".fcl").mkdir()
    (clean_env / ".fcl" / "stack.env").write_text("FCL_TRAIN_WINDOW_GOAL=300\n")
    monkeypatch.setenv("FCL_TRAIN_WINDOW_RECOMMENDATION", "40000")
    settings = load_settings()
    assert (settings.window_for("recommendation"), settings.window_for("goal")) == (40000, 300)
    assert settings.window_for("spending") == 730_000
    monkeypatch.setenv("FCL_TRAIN_WINDOW_SPENDING", "0")
    with pytest.raises(ValidationError, match="train_windows"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("FCL_DRIFT_MAX_PSI", "abc", "FCL_DRIFT_MAX_PSI: "),
        ("FCL_DRIFT_MAX_PSI", "1e400", "FCL_DRIFT_MAX_PSI: "),
        ("FCL_DRIFT_MAX_PSI", "\udcff\udcfe", "FCL_DRIFT_MAX_PSI: "),
        ("FCL_THRESHOLD_GOAL", "abc", "FCL_THRESHOLD_GOAL: "),
        ("FCL_TRAIN_WINDOW_SPENDING", "0", "FCL_TRAIN_WINDOW_<TYPE>: "),
        ("FCL_TRAINER_HYPERPARAMETERS", "{", 'error parsing value for field "trainer_hyperparameters"'),
    ],
)
def test_a_bad_setting_ends_a_command_in_one_line_naming_it(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    named: str,
) -> None:
    from fcl.cli import main

    monkeypatch.setenv(name, value)
    assert main(["trainer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcl: error: invalid settings: ") and err.count("\n") == 1, err
    assert named in err and "Traceback" not in err


def test_the_database_password_comes_from_its_file_and_any_character_survives(tmp_path: Path) -> None:
    from urllib.parse import unquote, urlsplit

    secret = tmp_path / "password"
    secret.write_text("p@ss:w/rd%?#\n")
    settings = Settings(
        _env_file=None,
        database_url="postgresql://fcl:ignored@db.internal:5432/fcl?sslmode=verify-full",
        database_password_file=secret,
    )
    parts = urlsplit(settings.database_url)
    assert unquote(parts.password or "") == "p@ss:w/rd%?#" and parts.hostname == "db.internal"
    assert parts.query == "sslmode=verify-full" and parts.username == "fcl"
    for content, said in ((b"", "is empty"), (None, "No such file"), (b"\xd1\xff\x00", "is not UTF-8 text")):
        missing = tmp_path / "absent"
        if content is not None:
            missing.write_bytes(content)
        with pytest.raises(ValidationError) as refused:
            Settings(_env_file=None, database_password_file=missing)
        assert said in refusal(refused.value)
        missing.unlink(missing_ok=True)


def test_each_token_has_one_scope() -> None:
    """The admin, serve and read tokens must differ: a token that were two would take the wider
    scope. Empty ones are unset."""
    with pytest.raises(ValidationError, match="must differ"):
        Settings(api_token="same", serve_token="same", _env_file=None)
    s = Settings(api_token="a", serve_token="", read_token="r", _env_file=None)
    assert (s.api_token, s.serve_token, s.read_token, s.api_token_name) == ("a", None, "r", "operator")
