"""ClickHouse sink and store access: chDB in-process by default, a server via clickhouse-connect."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, DataError, OperationalError

from pipeline.errors import BadDataError, ConfigError, RetryableSinkError, StoreBusy
from pipeline.settings import Settings
from pipeline.types import CuratedRecord

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "deploy" / "clickhouse"

# Server error codes that mean "these rows are bad", not "the store is unwell".
BAD_DATA_CODES = {6, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131, 190, 321, 349}

COLUMNS = [
    "Timestamp",
    "ObservedTimestamp",
    "TraceId",
    "SpanId",
    "SeverityText",
    "SeverityNumber",
    "ServiceName",
    "Body",
    "LogAttributes",
    "SessionId",
    "UserId",
    "Endpoint",
    "TransactionId",
    "LatencyMs",
    "StatusCode",
    "SecurityFlags",
    "TriggerReasons",
    "TriggerId",
    "TriggerOffset",
    "RuleIds",
    "Tags",
    "RetentionDays",
    "RawTopic",
    "RawPartition",
    "RawOffset",
    "RawIndex",
]


def open_client(settings: Settings) -> Client:
    """A clickhouse-connect client: a server when configured, else chDB at the store path."""
    try:
        if settings.uses_server:
            return clickhouse_connect.get_client(
                dsn=settings.clickhouse_url,
                host=settings.clickhouse_host,
                port=settings.clickhouse_port or 0,
                username=settings.clickhouse_user,
                password=settings.clickhouse_password,
                connect_timeout=5,
                send_receive_timeout=60,
                **tls_options(settings),
            )
        path = settings.store_path
        path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()))
    except ClickHouseError as exc:
        text = str(exc)
        if "Cannot lock file" in text or "already running" in text:
            raise StoreBusy(
                f"the embedded store {settings.store_path} is open in another process "
                "(a running sink answers queries on its query API)"
            ) from None
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
            raise ConfigError(
                f"TLS to ClickHouse failed: {_ssl_reason(text)}; set HINDSIGHT_CLICKHOUSE_CA_CERT to the CA "
                "that signed the server's certificate (or HINDSIGHT_CLICKHOUSE_SERVER_NAME)"
            ) from None
        if isinstance(exc, OperationalError):
            raise RetryableSinkError(f"ClickHouse unreachable: {text.splitlines()[0]}") from exc
        raise ConfigError(f"cannot open ClickHouse: {text.splitlines()[0]}") from exc


def tls_options(settings: Settings) -> dict[str, Any]:
    """get_client's TLS keywords from the settings (an https:// URL turns TLS on too)."""
    options: dict[str, Any] = {
        "secure": settings.clickhouse_secure or (settings.clickhouse_url or "").startswith("https://"),
        "verify": settings.clickhouse_verify,
    }
    for key, value in (
        ("ca_cert", settings.clickhouse_ca_cert),
        ("client_cert", settings.clickhouse_client_cert),
        ("client_cert_key", settings.clickhouse_client_key),
    ):
        if value is not None:
            if not value.is_file():
                raise ConfigError(f"ClickHouse TLS {key} file {value} does not exist")
            options[key] = str(value)
    if settings.clickhouse_server_name:
        options["server_host_name"] = settings.clickhouse_server_name
    return options


def _ssl_reason(text: str) -> str:
    m = re.search(r"\[SSL[^\]]*\][^)'\"]*", text)
    return m.group(0) if m else text.splitlines()[0][:200]


def migrate(client: Client, database: str) -> list[str]:
    """Apply deploy/clickhouse/*.sql in order, once each; returns the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version String, applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows}
    applied = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        version = path.stem
        if version in done:
            continue
        for statement in _statements(path.read_text().replace("{db}", database)):
            client.command(statement)
        client.insert(f"{database}.schema_migrations", [[version]], column_names=["version"])
        applied.append(version)
        log.info("migration applied version=%s database=%s", version, database)
    return applied


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def to_columns(rows: Sequence[CuratedRecord]) -> list[list[Any]]:
    """Curated records as column lists in COLUMNS order (a columnar insert)."""
    cols: list[list[Any]] = [[] for _ in COLUMNS]
    (
        ts,
        obs,
        trace,
        span,
        sev,
        sevnum,
        svc,
        body,
        attrs,
        sess,
        user,
        endp,
        tx,
        lat,
        status,
        flags,
        reasons,
        trig,
        trig_off,
        rules,
        tags,
        ret,
        rtopic,
        rpart,
        roff,
        ridx,
    ) = cols
    for r in rows:
        ts.append(r["timestamp"] * 1000)
        obs.append((r.get("observed_timestamp") or r["timestamp"]) * 1000)
        trace.append(r.get("trace_id") or "")
        span.append(r.get("span_id") or "")
        sev.append(r["level"])
        sevnum.append(r.get("severity_number") or 0)
        svc.append(r["service"])
        body.append(r["message"])
        attrs.append(r.get("attributes") or {})
        sess.append(r.get("session_id") or "")
        user.append(r.get("user_id") or "")
        endp.append(r.get("endpoint") or "")
        tx.append(r.get("transaction_id") or "")
        lat.append(r.get("latency_ms"))
        status.append(r.get("status_code"))
        flags.append(r.get("security_flags") or [])
        reasons.append(r.get("trigger_reasons") or [])
        trig.append(r.get("trigger_id") or "")
        trig_off.append(r.get("trigger_offset"))
        rules.append(r.get("rule_ids") or [])
        tags.append(r.get("tags") or [])
        ret.append(r.get("retention_days") or 30)
        rtopic.append(r["raw_topic"])
        rpart.append(r["raw_partition"])
        roff.append(r["raw_offset"])
        ridx.append(r.get("raw_index") or 0)
    return cols


def classify(exc: Exception) -> Exception:
    """The one place this connector decides: retry (store unwell) or dead-letter (rows bad)."""
    if isinstance(exc, OperationalError):
        return RetryableSinkError(f"ClickHouse unreachable: {str(exc).splitlines()[0]}")
    if isinstance(exc, DataError):  # the client could not serialise a value into its column type
        return BadDataError(str(exc).splitlines()[0][:500])
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        text = str(exc)
        if code in BAD_DATA_CODES or any(f"Code: {c}." in text for c in BAD_DATA_CODES):
            return BadDataError(text.splitlines()[0][:500])
        return RetryableSinkError(text.splitlines()[0][:500])
    if isinstance(exc, ValueError | TypeError | OverflowError | KeyError):
        return BadDataError(f"{type(exc).__name__}: {exc}")
    return RetryableSinkError(f"{type(exc).__name__}: {exc}")


class ClickHouseSink:
    """Writes curated rows into <database>.logs with columnar inserts.

    Owns the store client; a lock serialises inserts and the query API's reads, which share the
    client in the embedded (chDB) case where only this process may open the data dir.
    """

    name = "clickhouse"

    def __init__(self, client: Client, database: str = "hindsight", reader: Client | None = None) -> None:
        self.client = client
        # Power users' SQL runs on its own client: chDB applies per-query settings to the session,
        # and a refused statement leaves `readonly` set there, which must never reach the writer.
        self.reader = reader or client
        self.database = database
        self.table = f"{database}.logs"
        self.lock = threading.Lock()
        self._pending: list[CuratedRecord] = []
        with self.lock:
            migrate(client, database)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClickHouseSink:
        return cls(open_client(settings), settings.clickhouse_database, reader=open_client(settings))

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        if not self._pending:
            return
        try:
            columns = to_columns(self._pending)
            with self.lock:
                self.client.insert(self.table, columns, column_names=COLUMNS, column_oriented=True)
        except Exception as exc:
            self._pending.clear()
            raise classify(exc) from exc
        self._pending.clear()

    def stats_sink(self) -> ClickHouseStatsSink:
        """A sink for logs.stats sharing this client (one chDB engine per process)."""
        return ClickHouseStatsSink(self.client, self.database, self.lock)

    def close(self) -> None:
        with self.lock:
            self.client.close()
            if self.reader is not self.client:
                self.reader.close()


ENDPOINT_COLUMNS = [
    "WindowStart",
    "WindowEnd",
    "Endpoint",
    "RawPartition",
    "Count",
    "Errors",
    "Bytes",
    "P50Ms",
    "P95Ms",
    "P99Ms",
    "LatencyCount",
    "Sketch",
    "FirstOffset",
    "LastOffset",
]
SLOW_COLUMNS = [
    "WindowStart",
    "WindowEnd",
    "SessionId",
    "RawPartition",
    "Rank",
    "Count",
    "Errors",
    "Bytes",
    "P50Ms",
    "P95Ms",
    "P99Ms",
    "FirstOffset",
    "LastOffset",
]


# keys of a logs.stats record, in the column order above
ENDPOINT_KEYS = [
    "window_start_us",
    "window_end_us",
    "endpoint",
    "partition",
    "count",
    "errors",
    "bytes",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "latency_count",
    "sketch",
    "first_offset",
    "last_offset",
]
SLOW_KEYS = [
    "window_start_us",
    "window_end_us",
    "session",
    "partition",
    "rank",
    "count",
    "errors",
    "bytes",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "first_offset",
    "last_offset",
]


RULE_COLUMNS = ["WindowStart", "WindowEnd", "RuleId", "RawPartition", "Matches", "MatchedBytes",
                "LinesEmitted", "BytesEmitted"]  # fmt: skip
RULE_KEYS = ["window_start_us", "window_end_us", "rule_id", "partition", "matches", "matched_bytes",
             "lines_emitted", "bytes_emitted"]  # fmt: skip


class ClickHouseStatsSink:
    """Writes window statistics (logs.stats) into endpoint_stats, slow_sessions and rule_stats."""

    name = "clickhouse-stats"

    def __init__(self, client: Client, database: str, lock: threading.Lock) -> None:
        self.client = client
        self.database = database
        self.lock = lock
        self._pending: list[dict[str, Any]] = []

    def write_batch(self, rows: Sequence[Any]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        rows, self._pending = self._pending, []
        endpoint = [[r[k] for k in ENDPOINT_KEYS] for r in rows if r.get("kind") == "endpoint"]
        slow = [[r[k] for k in SLOW_KEYS] for r in rows if r.get("kind") == "slow_session"]
        rule = [[r[k] for k in RULE_KEYS] for r in rows if r.get("kind") == "rule"]
        try:
            with self.lock:
                if endpoint:
                    self.client.insert(
                        f"{self.database}.endpoint_stats", endpoint, column_names=ENDPOINT_COLUMNS
                    )
                if slow:
                    self.client.insert(f"{self.database}.slow_sessions", slow, column_names=SLOW_COLUMNS)
                if rule:
                    self.client.insert(f"{self.database}.rule_stats", rule, column_names=RULE_COLUMNS)
        except Exception as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        pass
