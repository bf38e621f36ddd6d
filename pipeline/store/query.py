"""Reading kept lines back: filters -> bound-parameter SQL over <db>.logs, rows as dicts."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.errors import QueryError
from pipeline.types import Level


class QueryClient(Protocol):
    def query(
        self, query: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Any: ...


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'250ms', '90s', '30m', '24h', '7d', '2w' or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise QueryError(f"not a duration: {text!r} (use e.g. 90s, 30m, 24h, 7d)")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def parse_time(value: str, now: float | None = None) -> int:
    """'15m', '2h', '7d' (ago), an ISO-8601 time, or epoch seconds -> epoch microseconds."""
    text = value.strip()
    now = time.time() if now is None else now
    if text[-1:].isalpha() and _DURATION.match(text):  # a duration with a unit: that long ago
        return int((now - parse_duration(text)) * 1_000_000)
    try:
        return int(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"cannot read time {value!r}: use 15m/2h/7d, ISO-8601 or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


# Timestamp is DateTime64(9): nanoseconds in an Int64 end in April 2262; stay clear of the overflow.
MAX_TIME_US = 9_200_000_000_000_000


@dataclass
class QueryFilters:
    """What `hindsight query` and the query API accept; every value is bound, never spliced."""

    session: str | None = None
    user: str | None = None
    service: str | None = None
    endpoint: str | None = None
    transaction_id: str | None = None
    level: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    grep: str | None = None  # text in the body (case-sensitive; served by the token index)
    attr: tuple[str, ...] = ()  # key=value pairs of LogAttributes, all must hold
    trigger: str | None = None  # a trigger reason (error, latency, ...) or a trigger id
    rule: str | None = None  # a rule id among the rules that matched the line
    template: str | None = None  # a template id (hindsight templates lists them)
    limit: int = 100

    @classmethod
    def from_params(cls, params: dict[str, str]) -> QueryFilters:
        names = {f.name for f in fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise QueryError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = dict(params)
        if "attr" in kwargs:
            kwargs["attr"] = tuple(kwargs["attr"].split("\n"))
        try:
            for key in ("since_us", "until_us", "limit"):
                if key in kwargs:
                    kwargs[key] = int(kwargs[key])
        except ValueError as exc:
            raise QueryError(f"bad number: {exc}") from None
        return cls(**kwargs)

    def to_params(self) -> dict[str, str]:
        out = {k: str(v) for k, v in asdict(self).items() if v is not None and k != "attr"}
        if self.attr:
            out["attr"] = "\n".join(self.attr)  # newlines never occur in key=value pairs given on a CLI
        return out


# The rows of one raw line always share a partition (by the line's own date), so FINAL need not merge
# across partitions: a one-minute range read of 1M rows took 75 ms instead of 277 ms.
FINAL_SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"

# Lines are read merged by GROUP BY their raw id rather than FINAL: the rows of one line (one per
# selection) agree on the line's own columns and are unions of the selections' (004_history.sql).
# Measured on 1M rows: a session lookup 24 ms (FINAL: 42 ms, the table before history: 27 ms), a
# one-minute range read 72 ms (FINAL: 85 ms). Filters on the line go in WHERE, on its selections
# (trigger, rule) in HAVING, so a line found by one selection still shows all the others.
SELECT = """
SELECT toUnixTimestamp64Micro(any(Timestamp)) AS timestamp_us, any(ServiceName) AS service,
       any(SeverityText) AS level, any(Body) AS message, any(SessionId) AS session_id,
       any(UserId) AS user_id, any(Endpoint) AS endpoint, any(TransactionId) AS transaction_id,
       any(TraceId) AS trace_id, any(SpanId) AS span_id, any(LatencyMs) AS latency_ms,
       any(StatusCode) AS status_code, any(SecurityFlags) AS security_flags, any(LogAttributes) AS attributes,
       any(ResourceAttributes) AS resource_attributes, any(ScopeName) AS scope_name,
       any(TemplateId) AS template_id,
       arraySort(groupUniqArrayArray(TriggerReasons)) AS trigger_reasons,
       arraySort(groupUniqArrayArray(TriggerIds)) AS trigger_ids, trigger_ids[1] AS trigger_id,
       arraySort(groupUniqArrayArray(RuleIds)) AS rule_ids, arraySort(groupUniqArrayArray(Tags)) AS tags,
       max(RetentionDays) AS retention_days, RawTopic AS raw_topic,
       RawPartition AS raw_partition, RawOffset AS raw_offset, RawIndex AS raw_index
FROM {table}
"""


def build_sql(filters: QueryFilters, database: str) -> tuple[str, dict[str, Any]]:
    """SQL with {name:Type} placeholders and the parameter values."""
    if not 1 <= filters.limit <= 100_000:
        raise QueryError("limit must be within 1..100000")
    for name in ("since_us", "until_us"):
        value = getattr(filters, name)
        if value is not None and not 0 <= value <= MAX_TIME_US:
            raise QueryError(f"{name} must be within 0..{MAX_TIME_US} (epoch microseconds up to 2261)")
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, value, name in (
        ("SessionId", filters.session, "session"),
        ("UserId", filters.user, "user"),
        ("ServiceName", filters.service, "service"),
        ("Endpoint", filters.endpoint, "endpoint"),
        ("TransactionId", filters.transaction_id, "transaction_id"),
    ):
        if value is not None:
            where.append(f"{column} = {{{name}:String}}")
            params[name] = value
    if filters.level is not None:
        try:
            params["severity"] = Level.parse(filters.level).value
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        where.append("SeverityNumber >= {severity:UInt8}")
    if filters.grep:
        where.append("Body LIKE {grep:String}")
        params["grep"] = "%" + re.sub(r"([\\%_])", r"\\\1", filters.grep) + "%"
    if filters.template:
        where.append("TemplateId = {template:String}")
        params["template"] = filters.template
    for i, pair in enumerate(filters.attr):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QueryError(f"--attr wants key=value, got {pair!r}")
        # a line's own attribute or its resource's (Kubernetes metadata, service.version, ...)
        where.append(
            f"(LogAttributes[{{attr_key{i}:String}}] = {{attr_value{i}:String}} "
            f"OR ResourceAttributes[{{attr_key{i}:String}}] = {{attr_value{i}:String}})"
        )
        params[f"attr_key{i}"], params[f"attr_value{i}"] = key, value
    having: list[str] = []
    if filters.trigger:
        having.append("(has(trigger_reasons, {trigger:String}) OR has(trigger_ids, {trigger:String}))")
        params["trigger"] = filters.trigger
    if filters.rule:
        having.append("has(rule_ids, {rule:String})")
        params["rule"] = filters.rule
    if filters.since_us is not None:
        where.append("Timestamp >= fromUnixTimestamp64Micro({since_us:Int64})")
        params["since_us"] = filters.since_us
    if filters.until_us is not None:
        where.append("Timestamp < fromUnixTimestamp64Micro({until_us:Int64})")
        params["until_us"] = filters.until_us
    sql = SELECT.format(table=f"{database}.logs")
    if where:
        sql += "WHERE " + " AND ".join(where) + "\n"
    sql += "GROUP BY RawTopic, RawPartition, RawOffset, RawIndex\n"
    if having:
        sql += "HAVING " + " AND ".join(having) + "\n"
    sql += "ORDER BY timestamp_us, raw_partition, raw_offset, raw_index\nLIMIT {limit:UInt32}"
    params["limit"] = filters.limit
    return sql, params


def run_query(client: QueryClient, filters: QueryFilters, database: str) -> list[dict[str, Any]]:
    """Rows matching filters, oldest first; each with an ISO `timestamp` added."""
    sql, params = build_sql(filters, database)
    result = client.query(sql, parameters=params)
    rows = []
    for row in result.named_results():
        row = dict(row)
        row["timestamp"] = datetime.fromtimestamp(row["timestamp_us"] / 1_000_000, UTC).isoformat()
        rows.append(row)
    return rows


def store_summary(client: QueryClient, database: str) -> dict[str, Any]:
    """Lines and bytes kept, and incidents (distinct triggers) with their reasons."""
    totals = client.query(
        f"SELECT count(), sum(length(Body)), uniqExact(SessionId) FROM {database}.logs FINAL {FINAL_SETTINGS}"
    ).result_rows[0]
    # an incident is a trigger with the lines it selected and its own reasons (Selections keeps each
    # selection of a line apart, so a later capture of the same lines is an incident of its own)
    incidents = client.query(
        f"""
        SELECT sel.TriggerId AS trigger, any(SessionId), argMax(ServiceName, SeverityNumber),
               argMax(Endpoint, SeverityNumber), uniqExact(RawTopic, RawPartition, RawOffset, RawIndex),
               argMax(Body, SeverityNumber), groupUniqArrayArray(sel.Reasons),
               toUnixTimestamp64Micro(min(Timestamp)), argMax(UserId, SeverityNumber)
        FROM {database}.logs FINAL ARRAY JOIN Selections AS sel
        WHERE sel.TriggerId != '' GROUP BY trigger ORDER BY min(Timestamp), trigger
        {FINAL_SETTINGS}
        """
    ).result_rows
    on_disk = client.query(
        "SELECT sum(bytes_on_disk) FROM system.parts "
        "WHERE database = {db:String} AND table = 'logs' AND active",
        parameters={"db": database},
    ).result_rows[0][0]
    return {
        "lines": int(totals[0]),
        "body_bytes": int(totals[1] or 0),
        "sessions": int(totals[2]),
        "bytes_on_disk": int(on_disk or 0),
        "incidents": [
            {
                "trigger_id": r[0],
                "session_id": r[1],
                "service": r[2],
                "endpoint": r[3],
                "lines": r[4],
                "message": r[5],
                "reasons": sorted(r[6]),
                "started_us": int(r[7]),
                "user_id": r[8],
            }
            for r in incidents
        ],
    }


def endpoint_stats(
    client: QueryClient,
    database: str,
    endpoint: str | None = None,
    since_us: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Window statistics per endpoint, the workers' partial windows merged (sketches included)."""
    from pipeline.engine.sketch import LatencySketch

    where = []
    params: dict[str, Any] = {"limit": limit}
    if endpoint is not None:
        where.append("Endpoint = {endpoint:String}")
        params["endpoint"] = endpoint
    if since_us is not None:
        where.append("WindowStart >= fromUnixTimestamp64Micro({since_us:Int64})")
        params["since_us"] = since_us
    sql = f"""
        SELECT Endpoint, toUnixTimestamp64Micro(WindowStart) AS start_us, sum(Count), sum(Errors), sum(Bytes),
               sumMap(Sketch), min(FirstOffset), max(LastOffset), count() AS parts
        FROM {database}.endpoint_stats FINAL
        {"WHERE " + " AND ".join(where) if where else ""}
        GROUP BY Endpoint, WindowStart ORDER BY WindowStart DESC, Endpoint LIMIT {{limit:UInt32}}
    """
    out = []
    for ep, start, count, errors, size, sketch, first, last, parts in client.query(
        sql, parameters=params
    ).result_rows:
        merged = LatencySketch.from_dict({str(k): int(v) for k, v in sketch.items()})
        out.append(
            {
                "endpoint": ep,
                "window_start_us": start,
                "count": count,
                "errors": errors,
                "bytes": size,
                "p50_ms": merged.quantile(0.5),
                "p95_ms": merged.quantile(0.95),
                "p99_ms": merged.quantile(0.99),
                "first_offset": first,
                "last_offset": last,
                "parts": parts,
            }
        )
    return out


def _literal(text: str) -> str:
    """A ClickHouse string literal (quotes and backslashes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def templates_sql(database: str, service: str | None = None, new_since_us: int | None = None) -> str:
    """The template catalog (hindsight.templates, count deltas summed per template): top by count, or
    with new_since_us, those first seen since then, newest first. A read-only SELECT for the store's
    SQL path (sandboxed like `hindsight query --sql`)."""
    where = f"WHERE ServiceName = {_literal(service)}" if service else ""
    having = f"HAVING first_seen_us >= {int(new_since_us)}" if new_since_us is not None else ""
    order = "first_seen DESC" if new_since_us is not None else "count DESC, template_id"
    return (
        "SELECT ServiceName AS service, Scope AS endpoint, TemplateId AS template_id, "
        "max(Template) AS template, sum(Count) AS count, "
        "toUnixTimestamp64Micro(min(FirstSeen)) AS first_seen_us, min(FirstSeen) AS first_seen, "
        "max(LastSeen) AS last_seen, sumMap(Levels) AS levels, max(Triggered) AS triggered, "
        f"max(Example) AS example FROM {database}.templates {where} "
        f"GROUP BY ServiceName, Scope, TemplateId {having} ORDER BY {order}"
    )
