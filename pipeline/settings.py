"""Settings from the environment (prefix HINDSIGHT_); built by the CLI, passed to everything else."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.types import CUSTOM_FUNCTION


def _env(name: str) -> AliasChoices:
    """Accept both HINDSIGHT_<NAME> and the conventional unprefixed variable."""
    return AliasChoices(f"HINDSIGHT_{name}", name, name.lower())


def default_home() -> Path:
    """`.hindsight` in the project folder when running from a source checkout (where `make` runs),
    else the user's data folder: the same place whatever the current directory."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return root / ".hindsight"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "hindsight"


CONFIG_ENV = "HINDSIGHT_CONFIG"
# HINDSIGHT_* variables that are not settings: switches of the package itself and of its tests
NOT_SETTINGS = frozenset({CONFIG_ENV, "HINDSIGHT_NATIVE", "HINDSIGHT_CHROMIUM"})


def _nearest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class TomlFile(PydanticBaseSettingsSource):
    """Settings from a TOML file (HINDSIGHT_CONFIG or `hindsight --config`), under the environment:
    keys are the settings' names (`lookback_s = 30`); an unknown key is refused with the nearest one."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        try:
            self.data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        known = settings_cls.model_fields
        unknown = [k for k in self.data if k not in known]
        if unknown:
            raise ConfigError(
                f"config file {path}: unknown setting {unknown[0]}{_nearest(unknown[0], known)}"
            )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelled HINDSIGHT_* variable is an error naming the nearest setting, not silently
    ignored (HINDSIGHT_LOOKBAK_S=5 used to leave the lookback at its default)."""
    known = {f"HINDSIGHT_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    unknown = sorted(k for k in environ if k.startswith("HINDSIGHT_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}{_nearest(unknown[0], known)}")


class Settings(BaseSettings):
    """Every knob of log-hindsight. Environment variables use the HINDSIGHT_ prefix; a TOML file
    (HINDSIGHT_CONFIG) lies under them; unknown variables and keys are refused."""

    model_config = SettingsConfigDict(
        env_prefix="HINDSIGHT_", extra="forbid", populate_by_name=True, frozen=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        refuse_unknown_variables(os.environ)
        path = os.environ.get(CONFIG_ENV)
        if not path:
            return init_settings, env_settings
        return init_settings, env_settings, TomlFile(settings_cls, Path(path))

    # --- Kafka ---------------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"),
        description="Existing Kafka cluster (host:port,...). Unset: the local single-node broker is used.",
    )
    kafka_port: int = Field(
        default=9092, ge=1, le=65535, description="Port of the local broker on 127.0.0.1."
    )
    kafka_controller_port: int | None = Field(
        default=None, description="KRaft controller port of the local broker; default kafka_port + 1."
    )
    kafka_version: str = Field(
        default="4.4.0", description="Apache Kafka version fetched for the local broker."
    )
    kafka_heap: str = Field(default="768m", description="Java heap (-Xmx) of the local broker.")
    kafka_extra_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka/aiokafka client settings (e.g. security.protocol, sasl.*), as JSON.",
        repr=False,  # sasl.password lives here
    )
    home: Path = Field(
        default_factory=default_home,
        description="Working folder: jar cache, broker data and logs, embedded store. Made absolute once, "
        "so every command finds the same broker and store from any directory.",
        json_schema_extra={
            "shown_default": "<project>/.hindsight from a source checkout, "
            "else $XDG_DATA_HOME/hindsight (~/.local/share/hindsight)"
        },
    )
    cache_dir: Path | None = Field(
        default=None, description="Where fetched Kafka jars are kept; default <home>/cache. Shared by tests."
    )
    raw_topic: str = Field(default="logs.raw", description="Topic every service publishes to.")
    curated_topic: str = Field(default="logs.curated", description="Topic of kept lines.")
    dlq_topic: str = Field(default="logs.dlq", description="Dead-letter topic: unusable records + reason.")
    rules_topic: str = Field(default="hindsight.rules", description="Compacted topic of capture rules.")
    stats_topic: str = Field(default="logs.stats", description="Window statistics of endpoints and sessions.")
    sessions_topic: str = Field(
        default="logs.sessions",
        description="Canonical lines re-keyed by session (ingest writes, worker reads).",
    )
    shared_topic: str = Field(
        default="hindsight.shared",
        description="State every worker process shares (captures, auth-failure counts, latency baselines): "
        "one partition, each worker writes its changes and reads everyone's in order.",
    )
    shared_retention_ms: int = Field(
        default=3600 * 1000,
        ge=60_000,
        description="Retention of the shared-state topic: at least lookback + follow (new workers read it).",
    )
    partitions: int = Field(default=4, ge=1, description="Partitions of the topics created by log-hindsight.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of created topics.")
    raw_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=60_000, description="Retention of logs.raw (the replay buffer)."
    )
    curated_retention_ms: int = Field(
        default=3 * 24 * 3600 * 1000, ge=60_000, description="Retention of logs.curated."
    )
    sessions_retention_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=60_000,
        description="Retention of logs.sessions: at least lookback + follow + the longest worker outage.",
    )
    dlq_retention_ms: int = Field(
        default=14 * 24 * 3600 * 1000, ge=60_000, description="Retention of logs.dlq."
    )
    request_timeout_s: float = Field(default=5.0, gt=0, description="How long a command waits for Kafka.")

    # --- Wire format / publisher -----------------------------------------------------------------
    wire_format: Literal["avro", "json", "confluent"] = Field(
        default="avro",
        description="Encoding the publisher writes: Avro single-object, JSON, or schema-registry framing.",
    )
    curated_format: Literal["avro", "json"] = Field(
        default="json",
        description="Encoding the worker, replay and capture write to logs.curated: JSON (validated against "
        "the Avro schema on read; ~20x cheaper to encode: the worker does 64.9k lines/s with it, 53.1k with "
        "Avro in the same benchmark run) or Avro single-object (carries the schema fingerprint).",
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible schema registry; enables its framing on read and write.",
    )
    schema_registry_auth: SecretStr | None = Field(
        default=None, description="Basic auth of the schema registry, as user:password."
    )
    schema_registry_ca: Path | None = Field(
        default=None, description="CA certificate (PEM) that signed the schema registry's TLS certificate."
    )
    max_record_bytes: int = Field(
        default=1_048_576, ge=1024, description="Raw records above this size are dead-lettered."
    )
    publish_linger_ms: int = Field(
        default=50,
        ge=0,
        description="How long the publisher groups one partition's lines into one raw message.",
    )
    publish_batch_lines: int = Field(default=500, ge=1, description="Most lines in one raw message.")
    handler_queue_size: int = Field(
        default=10_000, ge=1, description="Lines the logging handler holds before it drops (and counts)."
    )

    # --- Ingest --------------------------------------------------------------------------------
    ingest_group: str = Field(default="hindsight-ingest", description="Consumer group of the ingest stage.")
    # 10000 (not 5000): the canonical messages of a poll hold ~830 lines instead of ~625 on 4 partitions,
    # and the worker pays Faust's ~60 us per message over more lines (ingest benchmark: worker median
    # 174k against 155k lines/s, runs minutes apart on this VM)
    ingest_batch: int = Field(
        default=10_000, ge=1, le=100_000, description="Raw messages one ingest poll takes (consume(n))."
    )
    ingest_session_timeout_s: float = Field(
        default=10.0,
        ge=1.0,
        description="Ingest's consumer session timeout: how soon a dead process's partitions move.",
    )
    ingest_lines_per_message: int = Field(
        default=1000, ge=1, le=100_000, description="Most lines per logs.sessions message."
    )
    ingest_presets: bool = Field(
        default=True, description="Recognise the shippers' shapes (Fluent Bit, Vector, ECS, structlog, ...)."
    )
    ingest_field_map: dict[str, str] = Field(
        default_factory=dict,
        description='Renames applied after the presets, as JSON: {"kubernetes.pod_labels.app": "service"}.',
    )
    ingest_defaults: dict[str, str] = Field(
        default_factory=dict,
        description='Values for fields a line lacks, as JSON: {"service": "legacy", "level": "INFO"}.',
    )

    # --- Worker --------------------------------------------------------------------------------
    app_id: str = Field(
        default="hindsight-worker", description="Faust app id (consumer group, internal topics)."
    )
    lookback_s: float = Field(
        default=60.0, gt=0, description="How far back a trigger re-emits a session's lines."
    )
    session_max_lines: int = Field(default=2000, ge=1, description="Most lines buffered per session.")
    worker_gc_threshold: int = Field(
        default=100_000,
        ge=0,
        description="Worker's young-generation GC threshold (Python's default is 700; 0 keeps it). "
        "Buffered lines are many long-lived objects, so frequent collections cost a third of the throughput.",
    )
    worker_session_timeout_s: float = Field(
        default=15.0,
        ge=6,
        description="Consumer group session timeout: how soon a dead worker's partitions move.",
    )
    worker_commit_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the worker commits the offsets it finished (Faust's commit interval). "
        "After a crash up to this much input is processed again (the store dedups it).",
    )
    follow_s: float = Field(
        default=30.0, ge=0, description="How long after a trigger its key stays captured."
    )
    session_max_bytes: int = Field(default=1_048_576, ge=1024, description="Most bytes buffered per session.")
    memory_budget_mb: int = Field(
        default=1536,
        ge=1,
        description="Buffer memory of one worker process; least recently active sessions are evicted "
        "beyond it. A buffered line costs its canonical JSON size plus ~180 B (~720 B for a 540 B line) "
        "and stays lookback + 10 s, so the default holds a 60 s lookback at 20k lines/s with room.",
    )
    latency_floor_ms: float = Field(
        default=1000.0, ge=0, description="Latency spike: never below this latency."
    )
    latency_factor: float = Field(
        default=3.0, gt=0, description="Latency spike: above factor x the endpoint's last-window p95."
    )
    slow_session_p95_ms: float = Field(
        default=2000.0, gt=0, description="Slow session: window p95 above this."
    )
    slow_session_min_lines: int = Field(
        default=5, ge=1, description="Slow session: lines needed in the window."
    )
    auth_fail_count: int = Field(
        default=5, ge=1, description="Security: this many 401/403 for one user within the lookback triggers."
    )
    stats_window_s: float = Field(
        default=60.0, gt=0, description="Tumbling window of session/endpoint stats."
    )
    stats_grace_s: float = Field(
        default=30.0, ge=0, description="Event-time disorder a stats window waits for before it closes."
    )
    slowest_sessions: int = Field(default=10, ge=0, description="Slowest sessions kept per stats window.")
    key_budget_lps: float = Field(
        default=2000.0, gt=0, description="Emission budget per key (lines/s); beyond it lines are summarised."
    )
    global_budget_lps: float = Field(
        default=50_000.0,
        gt=0,
        description="Emission budget of one worker (lines/s); beyond it lines are summarised.",
    )
    max_sessions: int = Field(
        default=100_000, ge=1, description="Most sessions buffered; idle ones are evicted."
    )
    trigger_level: str = Field(
        default="ERROR", description="A line at or above this level triggers a capture."
    )
    baseline_level: str = Field(default="WARN", description="Lines at or above this level are always kept.")
    default_retention_days: int = Field(
        default=30, ge=1, description="Retention of stored lines without a rule."
    )

    # --- Templates and the novel_template trigger ------------------------------------------------
    templates: bool = Field(
        default=True,
        description="Count every line under its message template (the catalog in hindsight.templates; "
        "the novel_template trigger needs it).",
    )
    novel_template: bool = Field(
        default=False,
        description="The first line of a message template not seen within the horizon captures its session "
        "(rules may turn it on or off per service).",
    )
    novel_template_scope: Literal["service", "endpoint"] = Field(
        default="service", description="A template is new per service, or per service and endpoint."
    )
    novel_template_horizon_s: float = Field(
        default=86_400.0, gt=0, description="A template not seen for this long is new again."
    )
    novel_template_learning_s: float = Field(
        default=300.0,
        ge=0,
        description="After a worker's first line, templates are only learned for this long (event time).",
    )
    novel_template_budget: int = Field(
        default=5, ge=0, description="Most novel_template captures per service per budget window."
    )
    novel_template_budget_window_s: float = Field(
        default=60.0, gt=0, description="The window of novel_template_budget (event time)."
    )
    templates_flush_s: float = Field(
        default=10.0, gt=0, description="How often a worker sends its template counts to the store."
    )
    templates_max: int = Field(
        default=200_000,
        ge=100,
        description="Most templates a worker remembers (~300 B each); past it the least recently seen go.",
    )

    # --- Store ---------------------------------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        validation_alias=_env("CLICKHOUSE_URL"),
        description="ClickHouse server URL (http[s]://user:pass@host:port). Unset: embedded chDB.",
        repr=False,  # it may carry a password
    )
    clickhouse_host: str | None = Field(
        default=None, validation_alias=_env("CLICKHOUSE_HOST"), description="ClickHouse server host."
    )
    clickhouse_port: int | None = Field(
        default=None, validation_alias=_env("CLICKHOUSE_PORT"), description="ClickHouse server HTTP port."
    )
    clickhouse_user: str = Field(
        default="default", validation_alias=_env("CLICKHOUSE_USER"), description="ClickHouse user."
    )
    clickhouse_password: str = Field(
        default="",
        validation_alias=_env("CLICKHOUSE_PASSWORD"),
        description="ClickHouse password.",
        repr=False,
    )
    clickhouse_secure: bool = Field(default=False, description="Use TLS to the ClickHouse server.")
    clickhouse_verify: bool = Field(
        default=True, description="Verify the ClickHouse server's TLS certificate (keep on outside tests)."
    )
    clickhouse_ca_cert: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the ClickHouse server's certificate."
    )
    clickhouse_client_cert: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS to ClickHouse."
    )
    clickhouse_client_key: Path | None = Field(
        default=None, description="Private key (PEM) of the client certificate.", repr=False
    )
    clickhouse_server_name: str | None = Field(
        default=None, description="Name expected in the server's certificate when it differs from the host."
    )
    clickhouse_database: str = Field(default="hindsight", description="Database holding the tables.")
    sql_max_seconds: float = Field(
        default=30.0, gt=0, description="Power users' SQL (--sql, /sql): longest run before it is stopped."
    )
    sql_max_rows_read: int = Field(
        default=1_000_000_000, gt=0, description="Power users' SQL: most rows one query may read."
    )
    sql_max_memory_mb: int = Field(
        default=2048, gt=0, description="Power users' SQL: most memory one query may use (MiB)."
    )
    chdb_path: Path | None = Field(default=None, description="Embedded store data dir; default <home>/chdb.")

    # --- Sink runner ---------------------------------------------------------------------------
    sink_batch_rows: int = Field(default=10_000, ge=1, description="Rows per sink batch.")
    sink_batch_ms: int = Field(
        default=1000, ge=1, description="Longest wait before a partial batch is written."
    )
    sink_max_backoff_s: float = Field(
        default=30.0, gt=0, description="Longest back-off between sink retries."
    )
    sink_group: str = Field(default="hindsight-sink", description="Consumer group prefix of sinks.")
    primary_sinks: list[str] = Field(
        default_factory=lambda: ["clickhouse"],
        description="Sinks that get every curated line; any other sink gets only lines a rule routes to it.",
    )
    redaction: dict[str, list[dict[str, str]]] = Field(
        default_factory=dict,
        description='Per sink name (or "*" for all): [{"key": "email*", "action": "mask|hash|drop"}], '
        "applied to attributes before the sink writes (before the built-in rules).",
    )
    redaction_defaults: bool = Field(
        default=True,
        description="Built-in redaction for every sink: secret-looking attribute keys, and bearer tokens, "
        "password= pairs, card numbers (Luhn) and cloud access keys in texts, masked. false: off.",
    )
    redaction_defaults_except: list[str] = Field(
        default_factory=list, description="Sinks the built-in redaction does not apply to (JSON list)."
    )
    redaction_key: SecretStr | None = Field(
        default=None, description='HMAC key of the "hash" redaction action (required when a rule hashes).'
    )
    file_sink_dir: Path | None = Field(
        default=None, description="Folder of the file sink; default <home>/files."
    )
    file_sink_max_bytes: int = Field(
        default=64 * 1_048_576, ge=1024, description="The file sink starts a new file after this many bytes."
    )
    file_sink_rotate_s: float = Field(default=3600.0, gt=0, description="...or after this many seconds.")
    postgres_dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL of the postgres sink (support database), e.g. postgresql://u:p@h/db.",
    )
    postgres_table: str = Field(
        default="hindsight_logs",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Table the postgres sink fills.",
    )
    redis_url: SecretStr | None = Field(
        default=None, description="Redis of the redis sink, e.g. redis://h:6379/0."
    )
    redis_keep_lines: int = Field(
        default=1000, ge=1, description="Recent lines kept per user and per session."
    )
    redis_ttl_s: int = Field(
        default=86_400, ge=1, description="How long a user's or session's recent lines live."
    )
    archive_dir: Path | None = Field(
        default=None,
        description="Where `hindsight archive` keeps logs.raw for long retention; default <home>/archive.",
    )
    archive_batch_s: float = Field(
        default=60.0, gt=0, description="The archive writes a file per partition and hour at most this often."
    )
    webhook_url: str | None = Field(
        default=None, description="Where the webhook sink POSTs batches (JSON array)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the webhook's X-Hindsight-Signature header."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one webhook request.")
    webhook_batch_rows: int = Field(default=500, ge=1, description="Most rows in one webhook request.")

    # --- Query API -----------------------------------------------------------------------------
    query_host: str = Field(default="127.0.0.1", description="Bind address of the store's query API.")
    query_port: int = Field(default=8765, ge=0, le=65535, description="Port of the store's query API.")
    otlp_host: str = Field(default="127.0.0.1", description="Bind address of the OTLP/HTTP logs receiver.")
    otlp_port: int = Field(default=4318, ge=0, le=65535, description="Port of the OTLP/HTTP logs receiver.")
    otlp_grpc_port: int = Field(
        default=4317,
        ge=0,
        le=65535,
        description="Port of the OTLP/gRPC logs receiver on otlp_host (0: none; needs the grpc extra).",
    )
    otlp_max_body_bytes: int = Field(
        default=16 * 1_048_576, ge=1024, description="Largest OTLP request body (after gzip) accepted."
    )
    http_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body the query and rules APIs accept."
    )
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, description="HTTP servers close a connection whose request head is late."
    )
    http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="HTTP servers answer 408 to a request whose body is not in by then."
    )
    http_keep_alive_s: int = Field(default=5, ge=1, description="HTTP servers close idle connections then.")
    http_max_connections: int = Field(
        default=1000, ge=1, description="Connections one HTTP server holds at once; more are answered 503."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Bind address of the Prometheus /metrics endpoint."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint of a worker or sink; unset: no endpoint.",
    )

    # --- Rules and control API --------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="Bind address of the rules/captures API.")
    api_port: int = Field(default=8766, ge=0, le=65535, description="Port of the rules/captures API.")
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token allowed everything (admin: rules, captures; also read and ingest). "
        "The rules/captures API and the OTLP receiver refuse to start without one.",
    )
    read_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that may only read: query, lines, incidents, stats, SQL (403 elsewhere).",
    )
    ingest_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that may only send logs (the OTLP receiver; 403 elsewhere).",
    )
    rules_custom_allow: list[str] = Field(
        default_factory=list,
        description="Custom rule functions allowed, each named exactly: package.module:function (JSON list).",
    )
    level_url: str | None = Field(
        default=None,
        description='GET URL answering {"default": L, "services": {..}, "endpoints": {..}}: dynamic levels.',
    )
    level_poll_s: float = Field(default=30.0, ge=0.1, description="How often the level URL is polled.")
    level_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one level poll.")

    @field_validator("home", "cache_dir", "chdb_path", "archive_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative folders are taken from where the settings are made, once: child processes and
        later commands get the same absolute path."""
        return value.expanduser().absolute() if value is not None else None

    @field_validator("rules_custom_allow")
    @classmethod
    def _exact_functions(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(CUSTOM_FUNCTION, name)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: name each function exactly as package.module:function "
                "(no wildcard, no part starting with '_')"
            )
        return value

    @field_validator("trigger_level", "baseline_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        from pipeline.types import Level

        return Level.parse(value).name

    @property
    def local_broker(self) -> bool:
        """True when log-hindsight runs its own broker."""
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers every client uses."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def controller_port(self) -> int:
        """KRaft controller port of the local broker."""
        return self.kafka_controller_port or self.kafka_port + 1

    @property
    def jar_cache(self) -> Path:
        """Folder of the fetched broker jars for the configured version."""
        return (self.cache_dir or self.home / "cache") / f"kafka-{self.kafka_version}"

    @property
    def store_path(self) -> Path:
        """Data dir of the embedded store."""
        return self.chdb_path or self.home / "chdb"

    @property
    def uses_server(self) -> bool:
        """True when a ClickHouse server is configured instead of chDB."""
        return bool(self.clickhouse_url or self.clickhouse_host)

    @property
    def archive_path(self) -> Path:
        """Where `hindsight archive` writes (HINDSIGHT_ARCHIVE_DIR, default <home>/archive)."""
        return self.archive_dir or self.home / "archive"

    @property
    def query_url(self) -> str:
        """Base URL of the query API."""
        return f"http://{self.query_host}:{self.query_port}"

    def namespaced(self, prefix: str, **update: object) -> Settings:
        """A copy whose topics, Faust app and sink groups carry a prefix: runs that never mix."""
        names = {
            "raw_topic": f"{prefix}.{self.raw_topic}",
            "curated_topic": f"{prefix}.{self.curated_topic}",
            "dlq_topic": f"{prefix}.{self.dlq_topic}",
            "rules_topic": f"{prefix}.{self.rules_topic}",
            "stats_topic": f"{prefix}.{self.stats_topic}",
            "sessions_topic": f"{prefix}.{self.sessions_topic}",
            "shared_topic": f"{prefix}.{self.shared_topic}",
            "app_id": f"{self.app_id}-{prefix}",
            "ingest_group": f"{self.ingest_group}-{prefix}",
            "sink_group": f"{self.sink_group}-{prefix}",
        }
        return self.model_copy(update={**names, **update})

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers, consumers and admin clients."""
        return {"bootstrap.servers": self.bootstrap, **self.kafka_extra_config}
