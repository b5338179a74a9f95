"""One typed settings object for every shoppulse process, read from the environment."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoppulse import project_files
from shoppulse.redact import HIDDEN, redact, redact_url

KAFKA_VERSION = "4.4.0"


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names it and says what to do."""


class Settings(BaseSettings):
    """Process settings. Project settings use the ``SHOPPULSE_`` prefix; the addresses of
    external services use the names their ecosystems use (``KAFKA_BOOTSTRAP_SERVERS``,
    ``CLICKHOUSE_URL``), and setting one of those makes the local stack use that service
    instead of starting its own."""

    # An empty variable is an unset one: compose passes ``${X:-}`` for every optional setting.
    model_config = SettingsConfigDict(env_prefix="SHOPPULSE_", extra="ignore", frozen=True, populate_by_name=True,
                                      env_ignore_empty=True)

    data_dir: Path = Path(".shoppulse")
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "shoppulse")
    host: str = "127.0.0.1"

    kafka_bootstrap_servers: str | None = Field(default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_version: str = KAFKA_VERSION
    kafka_heap: str = "512m"
    kafka_connect_timeout_s: float = Field(default=30.0, gt=0, le=600)  # a processor's wait for the broker at start
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    topic_replication: int = Field(default=1, ge=1, le=10)

    clickhouse_url: str | None = Field(default=None, validation_alias="CLICKHOUSE_URL")
    clickhouse_user: str = Field(default="default", validation_alias="CLICKHOUSE_USER")
    clickhouse_password: str = Field(default="", validation_alias="CLICKHOUSE_PASSWORD", repr=False)
    clickhouse_database: str = "shoppulse"
    clickhouse_grafana_user: str = Field(default="grafana", validation_alias="CLICKHOUSE_GRAFANA_USER")
    clickhouse_grafana_password: str | None = Field(default=None, validation_alias="CLICKHOUSE_GRAFANA_PASSWORD",
                                                    repr=False)
    clickhouse_port: int = 8123

    grafana_url: str | None = Field(default=None, validation_alias="GRAFANA_URL")
    grafana_token: str | None = Field(default=None, validation_alias="GRAFANA_TOKEN", repr=False)
    grafana_folder: str = "shoppulse"
    grafana_timeout_s: float = Field(default=10.0, gt=0, le=300)  # one Grafana API call, retries aside

    openai_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY", repr=False)
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    llm_model: str = "gpt-4o-mini"
    llm_daily_budget_usd: float = Field(default=5.0, ge=0, le=10_000)
    llm_timeout_s: float = Field(default=10.0, gt=0, le=120)
    llm_max_retries: int = Field(default=2, ge=0, le=10)

    # The shop's admin API the action policies call (live policies only), its token, and the switch
    # that stops every automated action at once.
    shop_admin_url: str | None = None
    shop_admin_token: str | None = Field(default=None, repr=False)
    actions_kill_switch: bool = False
    actions_interval_s: float = Field(default=5.0, ge=0.5, le=600)
    actions_metrics_port: int = 9468
    # Grafana's webhook contact point, a trigger of the actions processor: its HMAC secret (with the
    # timestamp header) and/or basic auth; without either, every notification is refused.
    actions_webhook_port: int = 9469
    actions_webhook_secret: str | None = Field(default=None, repr=False)
    actions_webhook_user: str | None = None
    actions_webhook_password: str | None = Field(default=None, repr=False)
    # Approvals: asked in Slack (the bot's token, the channel, the app's signing secret for its
    # button clicks), or answered through signed links to this processor's public address.
    slack_bot_token: str | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN", repr=False)
    slack_signing_secret: str | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET", repr=False)
    slack_api_url: str = "https://slack.com/api"
    actions_slack_channel: str | None = Field(
        default=None, validation_alias=AliasChoices("SHOPPULSE_ACTIONS_SLACK_CHANNEL", "SLACK_CHANNEL"))
    actions_link_secret: str | None = Field(default=None, repr=False)
    actions_public_url: str | None = None

    pii_key: str | None = Field(default=None, repr=False)
    demo: bool = False
    ingest_metrics_port: int = 9465
    aggregate_metrics_port: int = 9466
    sidecar_metrics_port: int = 9467
    # How far an event's time may be ahead of / behind the moment ingestion received it (else a dead letter).
    max_clock_skew_s: int = Field(default=300, ge=0, le=86_400)
    max_event_age_s: int = Field(default=7 * 86_400, ge=60, le=366 * 86_400)
    window_grace_ms: int = Field(default=3000, ge=0, le=3_600_000)
    session_gap_ms: int = Field(default=300_000, ge=1000, le=86_400_000)
    session_grace_ms: int = Field(default=10_000, ge=0, le=3_600_000)
    # How often each processor commits. Ingestion's interval sets how fresh metrics_live is;
    # the aggregation's how soon a closed window is in metrics_1s (which the sidecar reads).
    ingest_commit_interval_s: float = Field(default=0.5, ge=0.05, le=60)
    aggregate_commit_interval_s: float = Field(default=2.0, ge=0.05, le=60)
    commit_interval_s: str | None = Field(default=None, exclude=True)  # replaced by the two above: refused
    # The aggregation's CPU niceness: when the cores are contended, ingestion (which keeps
    # metrics_live fresh) goes first; the aggregation has its grace period of slack and catches up.
    aggregate_nice: int = Field(default=5, ge=0, le=19)

    prometheus_port: int = 9090
    metrics_port: int = 9464
    migrations_dir: Path = Field(default_factory=project_files.migrations_dir)

    @field_validator("kafka_port", "kafka_controller_port", "clickhouse_port", "prometheus_port", "metrics_port",
                     "ingest_metrics_port", "aggregate_metrics_port", "sidecar_metrics_port", "actions_metrics_port",
                     "actions_webhook_port")
    @classmethod
    def _valid_port(cls, port: int) -> int:
        if not 1 <= port <= 65535:
            raise ValueError(f"{port} is not a TCP port (1-65535)")
        return port

    @field_validator("clickhouse_url", "grafana_url", "openai_base_url", "shop_admin_url", "slack_api_url",
                     "actions_public_url")
    @classmethod
    def _valid_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{redact_url(url)!r} is not an http(s) URL such as http://localhost:8123")
        return url

    @field_validator("commit_interval_s")
    @classmethod
    def _replaced(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("one commit interval per processor now: set SHOPPULSE_INGEST_COMMIT_INTERVAL_S "
                             "(how fresh the live figures are) and SHOPPULSE_AGGREGATE_COMMIT_INTERVAL_S instead")

    @model_validator(mode="after")
    def _session_grace_below_gap(self) -> Settings:
        if self.session_grace_ms >= self.session_gap_ms:
            raise ValueError(f"SHOPPULSE_SESSION_GRACE_MS ({self.session_grace_ms}) must be below "
                             f"SHOPPULSE_SESSION_GAP_MS ({self.session_gap_ms}): "
                             "a late event could otherwise reopen a closed session")
        return self

    @cached_property
    def kafka_bootstrap(self) -> str:
        """The broker address every Kafka client uses."""
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @cached_property
    def clickhouse_http_url(self) -> str:
        """The ClickHouse HTTP endpoint every ClickHouse client uses."""
        return self.clickhouse_url or f"http://{self.host}:{self.clickhouse_port}"

    @property
    def uses_external_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is not None

    @property
    def uses_external_clickhouse(self) -> bool:
        return self.clickhouse_url is not None


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one clear line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings: its message names them
                lines.append(f"bad settings: {error['msg'].removeprefix('Value error, ')}")
                continue
            field = str(error["loc"][0])
            env = _env_name(field)
            shown = HIDDEN if field in _SECRET_FIELDS else redact(repr(error.get("input")))
            lines.append(f"bad setting {env}={shown}: {redact(error['msg'])}")
        raise SettingsError("\n".join(lines)) from None


_SECRET_FIELDS = frozenset(name for name, info in Settings.model_fields.items() if not info.repr)


def _env_name(field: str) -> str:
    """The environment variable a settings field is read from (the first, when there are several)."""
    info = Settings.model_fields.get(field)
    if info is None:
        return field  # pydantic reports an alias as the location
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"SHOPPULSE_{field.upper()}"
