"""Settings read from the environment and from `.fcl/stack.env` (see docs/contract.md).

Real environment variables win over `.fcl/stack.env`, so a test or an operator can always point
a command somewhere else than the local stack. Per-model-type settings are keyed by the names in
`contract.model_types`: `FCL_THRESHOLD_<TYPE>` for each registered type, and the JSON maps
(`FCL_TRAINER_CAPS`, `FCL_TRAINER_TIMEOUTS`, ...) refuse a model type that is not registered.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from fcl.contract import model_types

STACK_ENV_FILE = Path(".fcl") / "stack.env"

DEFAULT_DATABASE_URL = "postgresql+asyncpg://fcl:fcl@localhost:5432/fcl"


# Per-model-type variables (`FCL_<NAME>_<TYPE>`) and the field each is gathered into.
PER_MODEL_TYPE = {
    "THRESHOLD": "thresholds",
    "TRAIN_WINDOW": "train_windows",
    "LIVE_DROP": "live_drops",
    "MAX_CHAMPION_AGE": "max_champion_ages",
}


class _PerModelTypeVariables(PydanticBaseSettingsSource):
    """`FCL_<NAME>_<TYPE>` of PER_MODEL_TYPE (threshold, training window, live drop, champion age)
    for every registered model type, from the environment or the env file (the environment wins),
    gathered into the fields PER_MODEL_TYPE names."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Path | None) -> None:
        super().__init__(settings_cls)
        self.env_file = env_file

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is gathered in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.env_file is not None and Path(self.env_file).is_file():
            found.update({k.upper(): v for k, v in dotenv_values(self.env_file).items() if v is not None})
        found.update({k.upper(): v for k, v in os.environ.items()})
        gathered: dict[str, Any] = {}
        for name, field_name in PER_MODEL_TYPE.items():
            values = {
                s.name: found[f"FCL_{name}_{s.name.upper()}"]
                for s in model_types.specs()
                if f"FCL_{name}_{s.name.upper()}" in found
            }
            if values:
                gathered[field_name] = values
        return gathered


class _EnvFileUnlessTheEnvironmentSaysOtherwise(PydanticBaseSettingsSource):
    """The env file, less its FCL_ARTIFACT_URL when the real environment sets FCL_ARTIFACT_DIR (and
    no FCL_ARTIFACT_URL): one setting under two names, and the environment wins over the file."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything comes from the inner source in __call__

    def __call__(self) -> dict[str, Any]:
        found = dict(self.inner())
        if "FCL_ARTIFACT_DIR" in os.environ and "FCL_ARTIFACT_URL" not in os.environ:
            found.pop("artifact_url", None)
        return found


class Settings(BaseSettings):
    """The service's configuration. Field `x` is read from `FCL_X`."""

    model_config = SettingsConfigDict(
        env_prefix="FCL_",
        populate_by_name=True,
        env_file=STACK_ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # Each field's docstring is its description: docs/operations.md's reference is generated
        # from them (scripts/settings_reference.py).
        use_attribute_docstrings=True,
    )

    kafka_bootstrap: str = "localhost:9092"
    """Kafka bootstrap servers, comma-separated."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How every Kafka client of fcl connects: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); required by the SASL protocols."""
    kafka_sasl_username: str | None = None
    """SASL user name; required by the SASL protocols."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password; required by the SASL protocols (never logged or shown)."""
    kafka_ssl_cafile: Path | None = None
    """PEM file of the CA the brokers' certificates are checked against (TLS protocols); unset:
    the system's trust store."""
    kafka_ssl_certfile: Path | None = None
    """PEM file of this client's certificate, for mutual TLS (with `FCL_KAFKA_SSL_KEYFILE`)."""
    kafka_ssl_keyfile: Path | None = None
    """PEM file of this client's private key, for mutual TLS (with `FCL_KAFKA_SSL_CERTFILE`)."""
    topic_replication_factor: int = Field(default=1, ge=1)
    """Replicas of each topic fcl creates (3 on a production cluster)."""
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    """`min.insync.replicas` of each topic fcl creates: with `acks=all`, a write is acknowledged
    once this many replicas have it (2 with 3 replicas); at most the replication factor."""
    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL of PostgreSQL (`postgresql://` is accepted and read as asyncpg's). libpq's
    TLS parameters in it (`?sslmode=verify-full&sslrootcert=/path/ca.pem`, `sslcert`, `sslkey`)
    hold for every connection of fcl."""
    database_password_file: Path | None = None
    """A file that holds the database password (a mounted secret), used instead of a password in
    `FCL_DATABASE_URL`, so that neither the URL nor the environment carries it."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Where `fcl streams` and `fcl trainer` serve `/metrics`, `/livez` and `/readyz` (each process
    its own; 0: any free port, printed at start); unset: not served. `fcl web` serves them on
    `FCL_HTTP_PORT`."""
    metrics_host: str = "127.0.0.1"
    """The address the `FCL_METRICS_PORT` server binds (`0.0.0.0` in a container)."""
    log_format: Literal["text", "json"] = "text"
    """How the processes log to stderr: `text` lines, or one JSON object per line (`json`), with a
    job's `job_id`, `dataset_id` and `model_type` on every line about it."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """The least severe level logged."""
    topic_prefix: str = "fcl."
    """Prefix of every topic fcl reads and writes (the tests use a unique one per run)."""
    api_token: str | None = None
    """The admin token: every POST and the kept dead letters need it, and it reaches every route;
    unset (or empty) refuses them (401)."""
    api_token_name: str = Field(default="operator", min_length=1, max_length=100)
    """Who holds the admin token: the champion ledger's actor for an admin call, followed by what
    the caller's `X-FCL-Actor` claims."""
    serve_token: str | None = None
    """The serving token: reads, the champion and its artifact's download, no mutation (a POST with
    it answers 403). For the apps that serve models: they never hold the admin token."""
    read_token: str | None = None
    """Once set, every GET but `/livez` and `/readyz` needs this, the serve or the admin token; unset,
    reads are open."""
    artifact_url: str | None = None
    """Where artifacts are written: a path or `file://...`, or `s3://bucket/prefix` on any
    S3-compatible store; unset: `FCL_ARTIFACT_DIR`."""
    artifact_dir: Path = Path(".fcl/artifacts")
    """The older name of a local `FCL_ARTIFACT_URL`, still honoured (`FCL_ARTIFACT_URL` wins)."""
    s3_endpoint_url: str | None = None
    """The S3-compatible store of an `s3://` artifact URL (`fcl stack up` writes its SeaweedFS's)."""
    aws_access_key_id: str | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    """The object store's access key."""
    aws_secret_access_key: str | None = Field(default=None, validation_alias="AWS_SECRET_ACCESS_KEY", repr=False)
    """The object store's secret key (never printed)."""
    aws_region: str | None = Field(default=None, validation_alias="AWS_REGION")
    """The object store's region."""
    http_host: str = "127.0.0.1"
    """The HTTP API's bind address."""
    http_port: int = Field(default=8000, ge=1, le=65535)
    """The HTTP API's port."""

    # Beyond the contract: service tuning, each with a sensible default.
    max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    """The largest input event accepted; a larger one is dead-lettered naming this limit."""
    thresholds: dict[str, int] = Field(default_factory=dict)
    """Samples that make a new dataset of the model type ready to train."""
    default_priority: int = Field(default=5, ge=0, le=9)
    """Priority (0-9) of the threshold events fcl emits and of `POST /auto-trigger-ready`'s jobs."""
    queue_ageing_seconds: float = Field(default=600.0, gt=0)
    """A waiting job gains one priority level per this many seconds, so none starves."""
    stream_batch_max: int = Field(default=500, ge=1)
    """Input events a streams agent commits in one transaction at most."""
    stream_session_timeout: float = Field(default=15.0, ge=6.0, le=300.0)
    """Seconds a streams worker that stopped answering (killed, hung) keeps its partitions before
    the group gives them to the others (Faust's own default is 60)."""
    topic_partitions: int = Field(default=4, ge=1)
    """Partitions of each topic fcl creates."""
    outbox_max_attempts: int = Field(default=5, ge=1)
    """An outbox row the broker refuses for what it is (too large, a bad topic) this many times is
    parked: kept with its error, counted in /metrics, skipped."""
    outbox_retention_seconds: float = Field(default=3600.0, ge=0)
    """Published outbox rows are deleted after this many seconds."""

    # HTTP API.
    http_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Request bodies larger than this are refused (413)."""
    http_db_pool: int = Field(default=10, ge=1)
    """Database connections of one `fcl web` process; a request past them waits for one (no connection
    is opened for a single request)."""
    http_cache: bool = True
    """Keep history and model-versions responses until PostgreSQL reports a change to their tables."""

    # Trainer workers.
    trainer_concurrency: int = Field(default=1, ge=1)
    """Jobs one trainer worker runs at a time. They share the machine's cores: each training runs
    cores / concurrency math threads (1 to 4), unless the worker is started with `OMP_NUM_THREADS`."""
    trainer_caps: dict[str, int] = Field(default_factory=dict)
    """JSON: model type -> running jobs at most across all workers, e.g. `{"recommendation": 1}`."""
    lease_seconds: float = Field(default=60.0, gt=0)
    """A running job's lease; a job whose worker stops renewing it is reclaimed after it expires."""
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """How often a worker renews its leases, publishes progress and writes its heartbeat."""
    drain_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long running jobs may go on before they are stopped and put back."""
    retrain_sweep_seconds: float = Field(default=60.0, ge=0)
    """How often each trainer queues a job for every dataset at or over its threshold with none
    waiting or running (0: off; a training's end does it at once too)."""
    trainer_timeouts: dict[str, float] = Field(default_factory=dict)
    """JSON: model type -> seconds a training may run before it is killed (default 3600)."""
    max_attempts: dict[str, int] = Field(default_factory=dict)
    """JSON: model type -> attempts a job gets (default 3)."""
    retry_base_seconds: float = Field(default=5.0, gt=0)
    """The first retry's delay; each next one doubles, with jitter."""
    retry_max_seconds: float = Field(default=300.0, gt=0)
    """The longest delay between two attempts."""
    trainer_hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """JSON: model type -> hyperparameter overrides of its trainer."""
    trainer_device: str | None = None
    """The torch device of the PyTorch trainers, e.g. `cpu`; unset: CUDA when present."""
    train_windows: dict[str, int] = Field(default_factory=dict)
    """Train on the most recent N samples of a dataset of the model type (defaults:
    recommendation 500,000, segmentation 200,000, spending 730,000, goal 200,000); bounds a
    training's memory; the version records it; the sample retention keeps at least that many."""
    sample_retention_days: float = Field(default=30.0, gt=0)
    """Samples are kept this many days, or longer where a dataset's training window still needs
    them; whole days are dropped (partitions), never rows. A champion's reference set is copied
    before its days go."""
    sample_partition_seconds: int = Field(default=86400, ge=60, le=86400)
    """The width of one partition of samples, the unit the retention drops: a day. Shorter only
    for an accelerated run (`bench/soak.py --profile months`); a change applies to partitions
    made after it."""
    champion_datasets: dict[str, list[str]] = Field(default_factory=dict)
    """JSON: model type -> the datasets whose candidates may become its champion (a type not
    named: any dataset). A candidate from another dataset is recorded and judged, never promoted
    by itself."""
    drift_max_psi: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Unset, drift is information only; set, a candidate whose largest feature PSI against the
    champion's training data exceeds it fails the `drift_psi_max` check."""
    live_eval_seconds: float = Field(default=30.0, ge=0)
    """How often the live figures of served versions are computed (predictions joined with their
    outcomes, by window); one trainer worker a round (0: off)."""
    live_drops: dict[str, float] = Field(default_factory=dict)
    """`FCL_LIVE_DROP_<TYPE>`: a job retrains the champion's dataset when its live key metric falls
    this far below its validated one, relative (0.1: 10 % worse), over a window of at least
    FCL_LIVE_MIN_PAIRS pairs; once per version and window. Unset: never."""
    drift_trigger_psi: float | None = Field(default=None, gt=0)
    """A job retrains the champion's dataset when the largest PSI of its live inputs against its
    training data passes this, over at least FCL_LIVE_MIN_PAIRS inputs; once per version and
    window. Unset: never."""
    max_champion_ages: dict[str, float] = Field(default_factory=dict)
    """`FCL_MAX_CHAMPION_AGE_<TYPE>`: seconds after its version was recorded that a champion is
    retrained (its dataset), once per version. Unset: never."""
    live_min_pairs: int = Field(default=50, ge=1)
    """The pairs (or logged inputs) a live window needs before its figures may queue a job."""
    retention_sweep_seconds: float = Field(default=3600.0, ge=0)
    """How often each trainer runs the retention of model versions (0: off)."""
    retention_keep_versions: int = Field(default=10, ge=1)
    """The retention keeps each model type's champion and its newest N versions..."""
    dead_letter_retention_days: float = Field(default=30.0, gt=0)
    """How long a refused input is kept whole (up to FCL_MAX_EVENT_BYTES) for `fcl dead-letters
    replay`; the dead-letter topic's bounded letters follow the topic's own retention."""
    retention_keep_days: float = Field(default=30.0, ge=0)
    """...and every version the champion ledger named in the last N days; it deletes the others'
    artifacts."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_file = getattr(dotenv_settings, "env_file", STACK_ENV_FILE)
        return (
            init_settings,
            _PerModelTypeVariables(settings_cls, env_file),
            env_settings,
            _EnvFileUnlessTheEnvironmentSaysOtherwise(settings_cls, dotenv_settings),
            file_secret_settings,
        )

    @classmethod
    def variables(cls) -> set[str]:
        """Every environment variable the settings read."""
        names = {
            f.validation_alias if isinstance(f.validation_alias, str) else f"FCL_{name.upper()}"
            for name, f in cls.model_fields.items()
            if name not in PER_MODEL_TYPE.values()
        }
        return names | {f"FCL_{v}_{s.name.upper()}" for v in PER_MODEL_TYPE for s in model_types.specs()}

    @property
    def artifact_location(self) -> str:
        """`FCL_ARTIFACT_URL` when set, else the older `FCL_ARTIFACT_DIR`."""
        return self.artifact_url or str(self.artifact_dir)

    def timeout_for(self, model_type: str) -> float:
        return float(self.trainer_timeouts.get(model_type, 3600.0))

    def attempts_for(self, model_type: str) -> int:
        return int(self.max_attempts.get(model_type, 3))

    def default_threshold(self, model_type: str) -> int:
        return int(self.thresholds.get(model_type, model_types.spec(model_type).default_threshold))

    def window_for(self, model_type: str) -> int:
        """How many of a dataset's most recent samples a training reads."""
        return self.train_windows.get(model_type) or model_types.spec(model_type).default_window

    def windows(self) -> dict[str, int]:
        return {name: self.window_for(name) for name in model_types.names()}

    @field_validator(
        "thresholds",
        "trainer_caps",
        "trainer_timeouts",
        "max_attempts",
        "trainer_hyperparameters",
        "train_windows",
        "champion_datasets",
        "live_drops",
        "max_champion_ages",
    )
    @classmethod
    def _registered_model_types(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in value if model_types.parse(k) is None)
        if unknown:
            raise ValueError(f"unknown model type(s) {unknown} (known: {model_types.known()})")
        return value

    @field_validator("thresholds", "train_windows")
    @classmethod
    def _positive_thresholds(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(k for k, v in value.items() if v < 1)
        if bad:
            raise ValueError(f"thresholds and windows must be at least 1: {bad}")
        return value

    @field_validator("live_drops", "max_champion_ages")
    @classmethod
    def _positive_limits(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if not v > 0)
        if bad:
            raise ValueError(f"live drops and champion ages must be above 0: {bad}")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in {"debug", "info", "warning", "error", "critical"} else value.lower()

    @field_validator("api_token", "serve_token", "read_token")
    @classmethod
    def _empty_token_is_unset(cls, value: str | None) -> str | None:
        # An empty token must not become a token that an empty header matches.
        return value or None

    @model_validator(mode="after")
    def _tokens_differ(self) -> Settings:
        tokens = [t for t in (self.api_token, self.serve_token, self.read_token) if t is not None]
        if len(set(tokens)) != len(tokens):
            raise ValueError("FCL_API_TOKEN, FCL_SERVE_TOKEN and FCL_READ_TOKEN must differ: a token has one scope")
        return self

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith("postgresql"):
            raise ValueError("FCL_DATABASE_URL must be a postgresql:// URL")
        if value.startswith("postgresql://"):
            # Accept the plain form people copy from psql; the service talks asyncpg.
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        return value

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        problems = []
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                f"FCL_KAFKA_SASL_{name.upper()}"
                for name, value in (
                    ("mechanism", self.kafka_sasl_mechanism),
                    ("username", self.kafka_sasl_username),
                    ("password", self.kafka_sasl_password),
                )
                if not value
            ]
            if missing:
                problems.append(f"{self.kafka_security_protocol} needs {', '.join(missing)}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            problems.append("FCL_KAFKA_SSL_CERTFILE and FCL_KAFKA_SSL_KEYFILE go together (mutual TLS)")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"FCL_{name.upper()} {path} is not a readable file")
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            problems.append(
                f"FCL_TOPIC_MIN_INSYNC_REPLICAS {self.topic_min_insync_replicas} is more than "
                f"FCL_TOPIC_REPLICATION_FACTOR {self.topic_replication_factor}: no write could be acknowledged"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _password_from_file(self) -> Self:
        if self.database_password_file is None:
            return self
        try:
            password = self.database_password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"FCL_DATABASE_PASSWORD_FILE {self.database_password_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"FCL_DATABASE_PASSWORD_FILE {self.database_password_file} is not UTF-8 text") from None
        if not password:
            raise ValueError(f"FCL_DATABASE_PASSWORD_FILE {self.database_password_file} is empty")
        parts = urlsplit(self.database_url)
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(password, safe='')}@{host}"
        object.__setattr__(self, "database_url", urlunsplit(parts._replace(netloc=netloc)))  # frozen: set once
        return self

    def topic(self, name: str) -> str:
        """The full name of one of the contract's topics, e.g. `topic("dead-letter")`."""
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def refusal(exc: ValidationError | SettingsError) -> str:
    """Why the settings were refused, in one line, each problem under its variable's name
    (`FCL_THRESHOLD_GOAL`, not the field `thresholds`)."""
    if isinstance(exc, SettingsError):  # a value that is not even JSON, where JSON is expected
        return f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc)
    per_type = {field: name for name, field in PER_MODEL_TYPE.items()}
    problems = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        if not loc:  # a check across settings names its variables itself
            problems.append(error["msg"].removeprefix("Value error, "))
            continue
        field = loc[0]
        if field in per_type:
            variable = f"FCL_{per_type[field]}_{loc[1].upper() if len(loc) > 1 else '<TYPE>'}"
        else:
            variable = "FCL_" + field.upper() + "".join(f"[{part}]" for part in loc[1:])
        problems.append(f"{variable}: {error['msg']}")
    return "; ".join(problems)


def load_settings(env_file: Path | None = STACK_ENV_FILE) -> Settings:
    """Fresh settings, not cached; `env_file=None` reads the environment alone."""
    return Settings(_env_file=env_file)
