"""ClickHouse sink: curated rows and window statistics into the store (pipeline.store.clickhouse opens it)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from connectors.base.protocols import HasStatsSink, StoreReader
from pipeline.errors import BadDataError, QueryError, RetryableSinkError
from pipeline.settings import Settings
from pipeline.store.clickhouse import migrate, open_client
from pipeline.store.query import MAX_TIME_US, QueryFilters, endpoint_stats, run_query, store_summary
from pipeline.store.sandbox import SqlBounds, run_sql
from pipeline.types import CuratedRecord

log = logging.getLogger(__name__)


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
    "TriggerIds",
    "Routes",
    "Selections",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "TraceFlags",
    "TemplateId",
]

# The exporter's otel_logs columns a line's attributes fill (the canonical line is flat: OTLP resource
# attributes come prefixed `resource.`, scope and trace flags under OTel's names for non-OTLP formats).
# Keys of the OpenTelemetry resource namespaces (Kubernetes metadata from Vector or Fluent Bit, ECS
# `host.*`, `service.version`) are resource attributes too, as the Collector's processors make them.
RESOURCE_PREFIX = "resource."
RESOURCE_NAMESPACES = (
    "service.", "k8s.", "host.", "container.", "cloud.", "deployment.", "process.", "os.", "faas.",
    "telemetry.sdk.",
)  # fmt: skip
SCOPE_NAME, SCOPE_VERSION, TRACE_FLAGS = "otel.scope.name", "otel.scope.version", "otel.trace_flags"


def split_attributes(
    service: str, attributes: dict[str, str] | None
) -> tuple[dict[str, str], dict[str, str], str, str, int]:
    """(LogAttributes, ResourceAttributes, ScopeName, ScopeVersion, TraceFlags) of one line; the
    resource always names its service, as the exporter's does."""
    log_attrs: dict[str, str] = {}
    resource = {"service.name": service}
    scope = version = ""
    flags = 0
    for key, value in (attributes or {}).items():
        if key.startswith(RESOURCE_PREFIX):
            resource[key[len(RESOURCE_PREFIX) :]] = value
        elif key.startswith(RESOURCE_NAMESPACES):
            resource[key] = value
        elif key == SCOPE_NAME:
            scope = value
        elif key == SCOPE_VERSION:
            version = value
        elif key == TRACE_FLAGS and value.isdigit() and int(value) < 256:
            flags = int(value)
        else:
            log_attrs[key] = value
    return log_attrs, resource, scope, version, flags


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
        trig_ids,
        routes,
        selections,
        resources,
        scopes,
        versions,
        trace_flags,
        template_ids,
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
        log_attrs, resource, scope, version, flags_byte = split_attributes(r["service"], r.get("attributes"))
        attrs.append(log_attrs)
        resources.append(resource)
        scopes.append(scope)
        versions.append(version)
        trace_flags.append(flags_byte)
        template_ids.append(r.get("template_id") or "")
        sess.append(r.get("session_id") or "")
        user.append(r.get("user_id") or "")
        endp.append(r.get("endpoint") or "")
        tx.append(r.get("transaction_id") or "")
        lat.append(r.get("latency_ms"))
        status.append(r.get("status_code"))
        flags.append(r.get("security_flags") or [])
        why = r.get("trigger_reasons") or []
        trigger = r.get("trigger_id") or ""
        rule_ids = r.get("rule_ids") or []
        line_tags = r.get("tags") or []
        line_routes = r.get("routes") or []
        days = r.get("retention_days") or 30
        reasons.append(why)
        trig.append(trigger)
        trig_off.append(r.get("trigger_offset"))
        rules.append(rule_ids)
        tags.append(line_tags)
        ret.append(days)
        trig_ids.append([trigger] if trigger else [])
        routes.append(line_routes)
        # this selection whole: the store merges the rows of one raw line (004_history.sql)
        selections.append([(trigger, why, rule_ids, line_tags, line_routes, days)])
        rtopic.append(r["raw_topic"])
        rpart.append(r["raw_partition"])
        roff.append(r["raw_offset"])
        ridx.append(r.get("raw_index") or 0)
    return cols


def sql_bounds(settings: Settings) -> SqlBounds:
    return SqlBounds(settings.sql_max_seconds, settings.sql_max_rows_read, settings.sql_max_memory_mb)


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


class ClickHouseSink(HasStatsSink, StoreReader):
    """Writes curated rows into <database>.logs with columnar inserts.

    Owns the store's clients: the writer, and a reader for the query API (in the embedded case only
    this process may open the data dir). Each has its own lock, so a slow query never holds up an
    insert (measured: an insert during a 15 s query on the other client took 0.4 s).
    """

    name = "clickhouse"

    def __init__(
        self,
        client: Client,
        database: str = "hindsight",
        reader: Client | None = None,
        bounds: SqlBounds | None = None,
    ) -> None:
        self.client = client
        # Reads, power users' SQL included, run on their own client: chDB applies per-query settings
        # to the session, and a refused statement leaves `readonly` set there, which must never reach
        # the writer.
        self.reader = reader or client
        self.database = database
        self.bounds = bounds or SqlBounds()
        self.table = f"{database}.logs"
        self.lock = threading.Lock()  # the writer's
        self.read_lock = self.lock if self.reader is client else threading.Lock()
        self._pending: list[CuratedRecord] = []
        with self.lock:
            migrate(client, database)
        self.reader.database = database  # unqualified names in SQL resolve to the project's tables

    @classmethod
    def from_settings(cls, settings: Settings) -> ClickHouseSink:
        return cls(
            open_client(settings),
            settings.clickhouse_database,
            reader=open_client(settings),
            bounds=sql_bounds(settings),
        )

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

    # ---- StoreReader: the query API reads through the store's owner, on the reader ----------
    def query(self, filters: QueryFilters) -> list[dict[str, Any]]:
        with self.read_lock:
            return run_query(self.reader, filters, self.database)

    def summary(self) -> dict[str, Any]:
        with self.read_lock:
            return store_summary(self.reader, self.database)

    def stats(self, params: dict[str, str]) -> list[dict[str, Any]]:
        unknown = set(params) - {"endpoint", "since_us", "limit"}
        if unknown:
            raise QueryError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        try:
            since = int(params["since_us"]) if "since_us" in params else None
            limit = int(params.get("limit", "100"))
        except ValueError as exc:
            raise QueryError(f"bad number: {exc}") from None
        if since is not None and not 0 <= since <= MAX_TIME_US:
            raise QueryError(f"since_us must be within 0..{MAX_TIME_US}")
        if not 1 <= limit <= 100_000:
            raise QueryError("limit must be within 1..100000")
        with self.read_lock:
            return endpoint_stats(self.reader, self.database, params.get("endpoint"), since, limit)

    def sql(self, text: str, limit: int) -> list[dict[str, Any]]:
        with self.read_lock:
            return run_sql(self.reader, text, limit, self.database, self.bounds)


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


TEMPLATE_COLUMNS = ["ServiceName", "Scope", "TemplateId", "Template", "Example", "FirstSeen", "LastSeen",
                    "Count", "Levels", "Triggered"]  # fmt: skip


def template_row(r: dict[str, Any]) -> list[Any]:
    """A worker's delta of one template (kind "template"), as a hindsight.templates row."""
    return [
        r["service"], r["endpoint"], r["template_id"], r["template"], r["example"], r["first_us"],
        r["last_us"], r["count"], r["levels"], int(r["triggered"]),
    ]  # fmt: skip


RULE_COLUMNS = ["WindowStart", "WindowEnd", "RuleId", "RawPartition", "Matches", "MatchedBytes",
                "LinesEmitted", "BytesEmitted"]  # fmt: skip
RULE_KEYS = ["window_start_us", "window_end_us", "rule_id", "partition", "matches", "matched_bytes",
             "lines_emitted", "bytes_emitted"]  # fmt: skip


class ClickHouseStatsSink:
    """Writes window statistics (logs.stats) into endpoint_stats, slow_sessions and rule_stats, and
    the workers' template counts into templates."""

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
        templates = [template_row(r) for r in rows if r.get("kind") == "template"]
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
                if templates:
                    self.client.insert(f"{self.database}.templates", templates, column_names=TEMPLATE_COLUMNS)
        except Exception as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        pass
