"""The ClickHouse sink on the real engine (chDB in-process): DDL, columnar insert, dedup, queries."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors import load_sink
from connectors.clickhouse import ClickHouseSink, classify
from pipeline.engine.curate import curate
from pipeline.errors import BadDataError, ConfigError, QueryError, RetryableSinkError
from pipeline.settings import Settings
from pipeline.store.clickhouse import migrate, open_client
from pipeline.store.query import QueryFilters, run_query, store_summary
from pipeline.store.sandbox import SqlBounds, run_sql
from pipeline.types import RawLine
from pipeline.wire.records import normalize

NOW = 1_790_000_000_000_000


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSink]:
    # chDB allows one engine per process: one store for this module.
    path: Path = tmp_path_factory.mktemp("chdb")
    sink = ClickHouseSink.from_settings(Settings(chdb_path=path, default_retention_days=3650))
    yield sink
    sink.close()


def row(offset: int, session: str, level: str = "INFO", index: int = 0, reason: str = "error"):  # type: ignore[no-untyped-def]
    record = normalize(
        {
            "timestamp": NOW + offset,
            "service": "svc",
            "level": level,
            "message": f"m{offset}.{index}",
            "session_id": session,
            "attributes": {"k": "v"},
            "latency_ms": 3.5,
        }
    )
    line = RawLine(record, "logs.raw", 1, offset, index)
    return curate(line, [reason], line, 3650)


def test_registry_resolves_lazily() -> None:
    assert load_sink("clickhouse") is ClickHouseSink
    with pytest.raises(ConfigError):
        load_sink("nope")


def test_migrations_are_idempotent(sink: ClickHouseSink) -> None:
    assert migrate(sink.client, "hindsight") == []
    columns = {r[0] for r in sink.client.query("DESCRIBE TABLE hindsight.logs").result_rows}
    for otel in (
        "Timestamp",
        "TraceId",
        "SpanId",
        "SeverityText",
        "SeverityNumber",
        "ServiceName",
        "Body",
        "ResourceAttributes",
        "LogAttributes",
    ):
        assert otel in columns


def test_insert_query_and_dedup_on_raw_line_id(sink: ClickHouseSink) -> None:
    rows = [row(i, "dedup-s", "ERROR" if i == 4 else "DEBUG") for i in range(5)]
    sink.write_batch(rows)
    sink.flush()
    sink.write_batch(rows[2:])  # a redelivery after a crash
    sink.flush()
    got = run_query(sink.client, QueryFilters(session="dedup-s"), "hindsight")
    assert [r["message"] for r in got] == [f"m{i}.0" for i in range(5)]
    assert got[0]["attributes"] == {"k": "v"} and got[0]["latency_ms"] == 3.5
    errors = run_query(sink.client, QueryFilters(session="dedup-s", level="ERROR"), "hindsight")
    assert [r["message"] for r in errors] == ["m4.0"]
    summary = store_summary(sink.client, "hindsight")
    assert summary["lines"] >= 5 and any(i["session_id"] == "dedup-s" for i in summary["incidents"])


def test_store_rejecting_rows_is_bad_data(sink: ClickHouseSink) -> None:
    bad = row(99, "bad-s")
    bad["raw_partition"] = -1  # UInt32 column
    sink.write_batch([bad])
    with pytest.raises(BadDataError):
        sink.flush()
    sink.flush()  # the failed batch is not retried by the sink itself: the runner decides


def test_classification() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    assert isinstance(classify(OperationalError("connection refused")), RetryableSinkError)
    assert isinstance(classify(DatabaseError("Code: 27. Cannot parse input")), BadDataError)
    assert isinstance(classify(DatabaseError("Code: 241. Memory limit exceeded")), RetryableSinkError)


def test_unreachable_server_is_retryable() -> None:
    with pytest.raises(RetryableSinkError):
        open_client(Settings(clickhouse_url="http://127.0.0.1:1"))


def test_rule_stats_rows_land_in_rule_stats(sink: ClickHouseSink) -> None:
    stats = sink.stats_sink()
    now = int(time.time() * 1_000_000)  # not NOW: the table's TTL (90 days) would drop rows of then
    base = {"window_start_us": now, "window_end_us": now + 60_000_000, "kind": "rule"}
    stats.write_batch(
        [
            {
                **base,
                "rule_id": "pci",
                "partition": 0,
                "matches": 5,
                "matched_bytes": 500,
                "lines_emitted": 4,
                "bytes_emitted": 400,
            },
            {
                **base,
                "rule_id": "pci",
                "partition": 1,
                "matches": 2,
                "matched_bytes": 20,
                "lines_emitted": 2,
                "bytes_emitted": 20,
            },
        ]
    )
    stats.flush()
    got = sink.client.query(
        "SELECT RuleId, sum(Matches), sum(LinesEmitted), sum(BytesEmitted) FROM hindsight.rule_stats FINAL "
        "GROUP BY RuleId"
    ).result_rows
    assert [tuple(r) for r in got] == [("pci", 7, 6, 420)]


def test_query_by_text_attribute_trigger_and_rule(sink: ClickHouseSink) -> None:
    rows = [row(200 + i, "flags-s") for i in range(4)]
    rows[0]["message"] = "payment declined: card 50% over limit"
    rows[1]["attributes"] = {"tenant": "acme", "k": "v"}
    rows[2]["trigger_reasons"] = ["latency"]
    rows[3]["rule_ids"] = ["pci", "debug-checkout"]
    sink.write_batch(rows)
    sink.flush()

    def messages(**kw: object) -> list[str]:
        return [
            r["message"] for r in run_query(sink.client, QueryFilters(session="flags-s", **kw), "hindsight")
        ]  # type: ignore[arg-type]

    assert messages(grep="50% over") == ["payment declined: card 50% over limit"]
    assert messages(grep="5_%") == []  # LIKE wildcards in the text are literal
    assert messages(attr=("tenant=acme",)) == [rows[1]["message"]]
    assert messages(attr=("tenant=acme", "k=other")) == []
    assert messages(trigger="latency") == [rows[2]["message"]]
    assert messages(rule="pci") == [rows[3]["message"]]
    # values are bound parameters: an injection attempt is just text that matches nothing
    assert messages(grep="' OR 1=1 --") == [] and messages(rule="x') OR has(RuleIds, 'pci") == []
    with pytest.raises(QueryError):
        messages(attr=("no-equals-sign",))


def test_sql_is_read_only_as_the_store_enforces_it(sink: ClickHouseSink) -> None:
    assert sink.reader is not sink.client
    got = run_sql(sink.reader, "SELECT count() AS n FROM hindsight.logs FINAL WHERE SessionId = 'dedup-s'")
    assert got == [{"n": 5}]
    # unqualified names are the project's tables; CTEs, unions and subqueries are fine
    assert sink.sql(
        "WITH s AS (SELECT SessionId FROM logs FINAL WHERE SessionId = 'dedup-s') "
        "SELECT count() AS n FROM s UNION ALL SELECT 1 AS n FROM hindsight.logs LIMIT 1",
        10,
    )
    for statement in (
        "INSERT INTO hindsight.logs (Body) VALUES ('x')",
        "DROP TABLE hindsight.logs",
        "ALTER TABLE hindsight.logs DELETE WHERE 1",
        "SET readonly = 0",
    ):
        with pytest.raises(QueryError, match=r"only a SELECT|store refused"):
            run_sql(sink.reader, statement)
    for statement, why in (
        ("SELECT 1 SETTINGS readonly = 0", "cannot change settings"),
        ("SELECT * FROM hindsight.logs SETTINGS max_result_rows = 0", "cannot change settings"),
        ("SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 0)", "cannot change settings"),
        ("SELECT * FROM file('/etc/passwd')", "table function file()"),
        ("SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')", "table function url()"),
        (
            "SELECT * FROM hindsight.logs WHERE Body IN (SELECT * FROM url('http://127.0.0.1:9/', CSV))",
            "url()",
        ),
        ("SELECT number FROM system.numbers LIMIT 5", "only the tables of hindsight"),
        ("SELECT * FROM numbers(10)", "table function numbers()"),
        ("SELECT name FROM system.tables", "only the tables of hindsight"),
        ("SELECT file('/etc/passwd')", "function file()"),
        ("SELECT dictGet('d', 'a', 1)", "function dictGet()"),
        ("SELECT 1 FROM hindsight.logs INTO OUTFILE '/tmp/hindsight-escape'", "INTO OUTFILE"),
        ("SELECT 1 # '\n; SELECT 2 -- '", "one statement"),
        ("SELECT 1 -- x\n; SELECT 2", "one statement"),
    ):
        with pytest.raises(QueryError, match=re.escape(why)):
            sink.sql(statement, 10)
    # bounds the query cannot lift: rows read (and time and memory the same way)
    tight = run_sql(sink.reader, "SELECT count() AS n FROM hindsight.logs", 10, "hindsight", SqlBounds())
    assert tight[0]["n"] > 3
    with pytest.raises(QueryError, match=r"(?i)limit for rows|rows to read"):
        run_sql(sink.reader, "SELECT Body FROM hindsight.logs", 10, "hindsight", SqlBounds(max_rows_read=2))
    sink.write_batch([row(600, "after-sql")])  # refused statements left the writer writable
    sink.flush()


# The OpenTelemetry Collector ClickHouse exporter's otel_logs columns and types (its default DDL).
OTEL_LOGS = {
    "Timestamp": "DateTime64(9)",
    "TimestampTime": "DateTime",
    "TraceId": "String",
    "SpanId": "String",
    "TraceFlags": "UInt8",
    "SeverityText": "LowCardinality(String)",
    "SeverityNumber": "UInt8",
    "ServiceName": "LowCardinality(String)",
    "Body": "String",
    "ResourceSchemaUrl": "LowCardinality(String)",
    "ResourceAttributes": "Map(LowCardinality(String), String)",
    "ScopeSchemaUrl": "LowCardinality(String)",
    "ScopeName": "String",
    "ScopeVersion": "LowCardinality(String)",
    "ScopeAttributes": "Map(LowCardinality(String), String)",
    "LogAttributes": "Map(LowCardinality(String), String)",
}


def test_logs_table_is_a_superset_of_otel_logs_names_and_types(sink: ClickHouseSink) -> None:
    types = {r[0]: r[1] for r in sink.client.query("DESCRIBE TABLE hindsight.logs").result_rows}
    assert {name: types.get(name) for name in OTEL_LOGS} == OTEL_LOGS
    for ours in (
        "SessionId",
        "UserId",
        "Endpoint",
        "TransactionId",
        "LatencyMs",
        "StatusCode",
        "TriggerReasons",
        "RuleIds",
        "Tags",
        "RetentionDays",
        "RawTopic",
        "RawPartition",
        "RawOffset",
    ):
        assert ours in types


def test_per_row_ttl_removes_expired_rows_only(sink: ClickHouseSink) -> None:
    import time

    old_us = time.time_ns() // 1000 - 40 * 86_400_000_000  # 40 days ago
    short, long = row(500, "ttl-s"), row(501, "ttl-s")
    for r, days in ((short, 30), (long, 365)):
        r["timestamp"] = old_us
        r["retention_days"] = days
    sink.write_batch([short, long])
    sink.flush()
    sink.client.command("OPTIMIZE TABLE hindsight.logs FINAL")  # TTL is applied when parts merge
    left = [r["message"] for r in run_query(sink.client, QueryFilters(session="ttl-s"), "hindsight")]
    assert left == [long["message"]]


def test_a_line_kept_again_keeps_its_whole_history(sink: ClickHouseSink) -> None:
    """A capture after a trigger (or a replay, a rule, a redelivery) adds to what the store says
    about a line instead of replacing it: both reasons stay queryable and each trigger stays an
    incident of its own, with its own reasons; retention is the longest asked for."""
    first = [row(700 + i, "hist-s", "ERROR" if i == 2 else "DEBUG") for i in range(3)]
    for r in first:  # the lookback of the ERROR at 702
        r["trigger_id"], r["trigger_offset"] = first[2]["trigger_id"], 702
    sink.write_batch(first)
    sink.flush()
    again = [row(700 + i, "hist-s", "ERROR" if i == 2 else "DEBUG", reason="capture") for i in range(3)]
    for r in again:
        r["trigger_id"] = "capture-hist"
        r["rule_ids"] = ["capture-rule"]
        r["tags"] = ["ticket-1"]
        r["routes"] = ["archive"]
        r["retention_days"] = 4000
    sink.write_batch(again)
    sink.flush()
    sink.write_batch(again[:1])  # the capture redelivered: nothing new
    sink.flush()

    got = run_query(sink.client, QueryFilters(session="hist-s"), "hindsight")
    assert [r["message"] for r in got] == ["m700.0", "m701.0", "m702.0"]
    error_trigger = first[0]["trigger_id"]
    for r in got:
        assert r["trigger_reasons"] == ["capture", "error"]
        assert r["trigger_ids"] == sorted([error_trigger, "capture-hist"])
        assert r["rule_ids"] == ["capture-rule"] and r["tags"] == ["ticket-1"]
        assert r["retention_days"] == 4000
    by_reason = {
        reason: [r["message"] for r in run_query(sink.client, QueryFilters(trigger=reason), "hindsight")]
        for reason in ("error", "capture", "capture-hist", error_trigger)
    }
    assert {"m700.0", "m702.0"} <= set(by_reason["error"]) and by_reason["capture"] == [
        "m700.0",
        "m701.0",
        "m702.0",
    ]
    assert by_reason["capture-hist"] == by_reason[error_trigger] == by_reason["capture"]
    incidents = {i["trigger_id"]: i for i in store_summary(sink.client, "hindsight")["incidents"]}
    assert incidents[error_trigger]["reasons"] == ["error"] and incidents[error_trigger]["lines"] == 3
    assert incidents["capture-hist"]["reasons"] == ["capture"] and incidents["capture-hist"]["lines"] == 3
    [[selections]] = sink.client.query(
        "SELECT Selections FROM hindsight.logs FINAL WHERE SessionId = 'hist-s' AND RawOffset = 702"
    ).result_rows
    assert sorted((s["TriggerId"], s["Reasons"], s["RetentionDays"]) for s in selections) == sorted(
        [(error_trigger, ["error"], 3650), ("capture-hist", ["capture"], 4000)]
    )
    sink.client.command("OPTIMIZE TABLE hindsight.logs FINAL")  # merged on disk: the same answers
    assert run_query(sink.client, QueryFilters(session="hist-s"), "hindsight") == got


def test_history_migration_keeps_the_rows_stored_before_it(tmp_path: Path) -> None:
    """A store created before 004_history: its rows are in the new table, each as its one selection."""
    import subprocess
    import sys

    script = f"""
import pathlib, shutil
import clickhouse_connect
from pipeline.store import clickhouse as store
client = clickhouse_connect.get_client(interface="chdb", path={str(tmp_path / "store")!r})
all_sql = store.MIGRATIONS
old = pathlib.Path({str(tmp_path / "old")!r}); old.mkdir()
for p in sorted(all_sql.glob("*.sql")):
    if p.stem < "004":
        shutil.copy(p, old)
store.MIGRATIONS = old
store.migrate(client, "h")
client.command("INSERT INTO h.logs (Timestamp, ObservedTimestamp, SeverityText, ServiceName, Body, "
               "TriggerReasons, TriggerId, RuleIds, RetentionDays, RawTopic, RawPartition, RawOffset) "
               "VALUES (now64(9), now64(9), 'ERROR', 's', 'old line', ['error'], 't-old', ['r1'], 45, "
               "'raw', 0, 7)")
store.MIGRATIONS = all_sql
print(store.migrate(client, "h"))
print(client.query("SELECT Body, TriggerReasons, TriggerIds, RuleIds, RetentionDays, Selections "
                   "FROM h.logs FINAL").result_rows)
print(client.query("EXISTS TABLE h.logs_before_history").result_rows)
"""
    out = subprocess.run(  # chDB: one store per process, and this module's fixture holds another
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert out[0] == "['004_history', '005_otel_logs_view', '006_templates']"
    assert out[1] == (
        "[('old line', ['error'], ['t-old'], ['r1'], 45, [{'TriggerId': 't-old', 'Reasons': ['error'], "
        "'RuleIds': ['r1'], 'Tags': [], 'Routes': [], 'RetentionDays': 45}])]"
    )
    assert out[2] == "[(0,)]"


def test_a_running_query_never_holds_up_an_insert(sink: ClickHouseSink) -> None:
    """Reads run on the reader client under their own lock: with a query in progress (its lock held
    here), the writer still inserts."""
    import threading

    assert sink.read_lock is not sink.lock and sink.reader is not sink.client
    done = threading.Event()
    with sink.read_lock:  # as a slow /sql query holds it
        sink.write_batch([row(650, "during-query")])
        writer = threading.Thread(target=lambda: (sink.flush(), done.set()), daemon=True)
        writer.start()
        writer.join(60)  # a hang guard: with one lock this would wait for the query
        assert done.is_set()
    assert [
        r["message"] for r in run_query(sink.client, QueryFilters(session="during-query"), "hindsight")
    ] == ["m650.0"]


def test_otel_logs_answers_the_exporters_queries_each_line_once(sink: ClickHouseSink) -> None:
    """Queries written for the OpenTelemetry exporter's otel_logs table run unchanged against the
    hindsight.otel_logs view: its columns only, each line once although it was stored twice."""
    rows = [row(800 + i, "otel-s", "ERROR" if i == 2 else "INFO") for i in range(3)]
    for r in rows:
        r["service"] = "otel-svc"
        r["trace_id"] = "0af7651916cd43dd8448eb211c80319c"
    sink.write_batch(rows)
    sink.flush()
    sink.write_batch(rows)  # a redelivery
    sink.flush()
    q = sink.client.query
    latest = q(
        "SELECT Timestamp, ServiceName, SeverityText, Body FROM hindsight.otel_logs "
        "WHERE ServiceName = 'otel-svc' ORDER BY Timestamp DESC LIMIT 100"
    ).result_rows
    assert [(r[1], r[2], r[3]) for r in latest] == [
        ("otel-svc", "ERROR", "m802.0"),
        ("otel-svc", "INFO", "m801.0"),
        ("otel-svc", "INFO", "m800.0"),
    ]
    by_trace = q(
        "SELECT Body FROM hindsight.otel_logs "
        "WHERE TraceId = '0af7651916cd43dd8448eb211c80319c' ORDER BY Timestamp"
    ).result_rows
    assert by_trace == [("m800.0",), ("m801.0",), ("m802.0",)]
    levels = q(
        "SELECT SeverityText, count() FROM hindsight.otel_logs WHERE ServiceName = 'otel-svc' "
        "AND mapContains(LogAttributes, 'k') GROUP BY SeverityText ORDER BY SeverityText"
    ).result_rows
    assert levels == [("ERROR", 1), ("INFO", 2)]
    columns = [r[0] for r in q("DESCRIBE TABLE hindsight.otel_logs").result_rows]
    assert set(columns) == set(OTEL_LOGS)


def test_otel_columns_are_filled_and_the_exporters_queries_find_them(sink: ClickHouseSink) -> None:
    """A line from OTLP (resource attributes, scope, trace flags) and one from a Kubernetes shipper
    (k8s.* metadata): ResourceAttributes, ScopeName, ScopeVersion and TraceFlags hold them as the
    OpenTelemetry exporter writes them, LogAttributes keeps the rest, and queries of the kind its
    documentation gives (by resource attribute, by token, a severity time series) find them."""
    otlp, shipped = row(900, "otel-r", "ERROR"), row(901, "otel-r", "INFO")
    otlp["service"] = shipped["service"] = "otel-res"
    otlp["trace_id"] = "5b8efff798038103d269b633813fc60c"
    otlp["attributes"] = {
        "resource.deployment.environment": "prod",
        "otel.scope.name": "checkout.payments",
        "otel.scope.version": "1.4.0",
        "otel.trace_flags": "1",
        "tenant": "acme",
    }
    otlp["message"] = "card declined for order 7"
    shipped["attributes"] = {"k8s.pod.name": "shop-7d9f", "k8s.namespace.name": "prod", "stream": "stdout"}
    sink.write_batch([otlp, shipped])
    sink.flush()
    q = sink.client.query
    got = q(
        "SELECT Body, ResourceAttributes, ScopeName, ScopeVersion, TraceFlags, LogAttributes "
        "FROM hindsight.otel_logs WHERE ServiceName = 'otel-res' ORDER BY Timestamp"
    ).result_rows
    assert got == [
        (
            "card declined for order 7",
            {"service.name": "otel-res", "deployment.environment": "prod"},
            "checkout.payments",
            "1.4.0",
            1,
            {"tenant": "acme"},
        ),
        (
            "m901.0",
            {"service.name": "otel-res", "k8s.pod.name": "shop-7d9f", "k8s.namespace.name": "prod"},
            "",
            "",
            0,
            {"stream": "stdout"},
        ),
    ]
    by_pod = q(
        "SELECT Timestamp AS log_time, Body FROM hindsight.otel_logs "
        "WHERE ResourceAttributes['k8s.pod.name'] = 'shop-7d9f' "
        f"AND TimestampTime >= toDateTime({NOW // 1_000_000 - 3600})"  # the test's "last hour"
    ).result_rows
    assert [r[1] for r in by_pod] == ["m901.0"]
    by_token = q(
        "SELECT Body FROM hindsight.otel_logs WHERE hasToken(Body, 'declined') "
        "AND ResourceAttributes['service.name'] = 'otel-res'"
    ).result_rows
    assert by_token == [("card declined for order 7",)]
    series = q(
        "SELECT toStartOfInterval(Timestamp, INTERVAL 60 second) AS time, SeverityText, count() AS count "
        "FROM hindsight.otel_logs WHERE ServiceName = 'otel-res' "
        "GROUP BY SeverityText, time ORDER BY SeverityText"
    ).result_rows
    assert [(r[1], r[2]) for r in series] == [("ERROR", 1), ("INFO", 1)]
    # hindsight's own query: the resource beside the line's attributes, and --attr finds either
    found_rows = run_query(
        sink.client, QueryFilters(session="otel-r", attr=("k8s.pod.name=shop-7d9f",)), "hindsight"
    )
    assert len(found_rows) == 1, found_rows
    [found] = found_rows
    assert found["message"] == "m901.0" and found["attributes"] == {"stream": "stdout"}
    assert found["resource_attributes"]["k8s.namespace.name"] == "prod"
    scoped_rows = run_query(sink.client, QueryFilters(session="otel-r", attr=("tenant=acme",)), "hindsight")
    assert len(scoped_rows) == 1, scoped_rows
    [scoped] = scoped_rows
    assert scoped["scope_name"] == "checkout.payments"


def test_template_catalog_sums_worker_deltas_and_lines_carry_their_template(sink: ClickHouseSink) -> None:
    """Two workers' count deltas of one template sum into one catalog row (the learner's text and
    example kept); `templates_sql` lists top by count or the new ones; a kept line's TemplateId
    is queryable with the template filter."""
    from pipeline.engine.templates import mask, template_id
    from pipeline.store.query import templates_sql
    from pipeline.store.sandbox import run_sql

    tid = template_id(mask("card 7 declined"))
    base = int(time.time() * 1_000_000)  # now: the table's TTL (90 days past LastSeen) keeps the rows
    old = template_id(mask("cart loaded"))

    def delta(
        t: str, first: int, last: int, count: int, levels: dict[str, int], text: str = ""
    ) -> dict[str, Any]:
        return {"kind": "template", "service": "tpl-svc", "endpoint": "", "template_id": t, "template": text,
                "example": text and text.replace("<*>", "7"),
                "first_us": base + first, "last_us": base + last,
                "count": count, "levels": levels, "triggered": bool(text) and t == tid}  # fmt: skip

    stats = sink.stats_sink()
    stats.write_batch([
        delta(old, -86_400_000_000 * 2, 0, 40, {"INFO": 40}, "cart loaded"),
        delta(tid, 5, 9, 2, {"INFO": 2}, "card <*> declined"),  # the process that learned it
        delta(tid, 7, 30, 3, {"WARN": 1, "INFO": 2}),  # another process's counts of it
    ])  # fmt: skip
    stats.flush()
    top = run_sql(sink.reader, templates_sql("hindsight", "tpl-svc"), 10, "hindsight")
    assert [(r["template_id"], r["count"]) for r in top] == [(old, 40), (tid, 5)]
    new = run_sql(sink.reader, templates_sql("hindsight", "tpl-svc", base - 86_400_000_000), 10, "hindsight")
    [row_] = new
    assert (row_["template"], row_["example"], row_["triggered"]) == (
        "card <*> declined",
        "card 7 declined",
        1,
    )
    assert row_["levels"] == {"INFO": 4, "WARN": 1} and row_["first_seen_us"] == base + 5
    assert run_sql(sink.reader, templates_sql("hindsight", "o'ther\\"), 10, "hindsight") == []  # quoted

    record = normalize(
        {"timestamp": NOW + 960, "service": "tpl-svc", "level": "ERROR", "message": "card 7 declined"}
    )
    # curation sets the id (a long retention: the TTL must not drop a row of NOW's day, months ago)
    line = curate(RawLine(record, "logs.raw", 1, 960, 0), ["error"], None, 3650)
    assert line["template_id"] == tid
    sink.write_batch([line])
    sink.flush()
    [found] = run_query(sink.client, QueryFilters(template=tid), "hindsight")
    assert found["message"] == "card 7 declined" and found["template_id"] == tid
