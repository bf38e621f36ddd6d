"""The ClickHouse sink on the real engine (chDB in-process): DDL, columnar insert, dedup, queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors import load_sink
from connectors.clickhouse import ClickHouseSink, classify, migrate, open_client
from pipeline.errors import BadDataError, ConfigError, RetryableSinkError
from pipeline.query import QueryFilters, run_query, store_summary
from pipeline.serde import normalize
from pipeline.settings import Settings
from pipeline.types import RawLine
from pipeline.window import curate

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
    base = {"window_start_us": NOW, "window_end_us": NOW + 60_000_000, "kind": "rule"}
    stats.write_batch(
        [
            {**base, "rule_id": "pci", "partition": 0, "matches": 5, "matched_bytes": 500,
             "lines_emitted": 4, "bytes_emitted": 400},
            {**base, "rule_id": "pci", "partition": 1, "matches": 2, "matched_bytes": 20,
             "lines_emitted": 2, "bytes_emitted": 20},
        ]
    )  # fmt: skip
    stats.flush()
    got = sink.client.query(
        "SELECT RuleId, sum(Matches), sum(LinesEmitted), sum(BytesEmitted) FROM hindsight.rule_stats FINAL "
        "GROUP BY RuleId"
    ).result_rows
    assert [tuple(r) for r in got] == [("pci", 7, 6, 420)]
