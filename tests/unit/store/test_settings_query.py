"""Settings from the environment and query building with bound parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.errors import QueryError
from pipeline.settings import Settings
from pipeline.store.query import QueryFilters, build_sql, parse_time


def test_env_prefix_and_conventional_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("HINDSIGHT_RAW_TOPIC", "custom.raw")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123")
    s = Settings()
    assert s.bootstrap == "k1:9092,k2:9092" and not s.local_broker
    assert s.raw_topic == "custom.raw"
    assert s.uses_server


def test_unknown_setting_and_bad_level_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(no_such_field=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(trigger_level="LOUD")


def test_every_field_is_described() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []


def test_query_values_are_bound_never_spliced() -> None:
    evil = "x' OR 1=1 --"
    sql, params = build_sql(QueryFilters(session=evil, level="WARN", since_us=5, limit=10), "hindsight")
    assert evil not in sql
    assert params["session"] == evil and params["severity"] == 13 and params["since_us"] == 5
    assert "{session:String}" in sql and "{limit:UInt32}" in sql


def test_query_rejects_unknown_filters_and_bad_limits() -> None:
    with pytest.raises(QueryError):
        QueryFilters.from_params({"sql": "DROP TABLE x"})
    with pytest.raises(QueryError):
        build_sql(QueryFilters(limit=0), "hindsight")
    with pytest.raises(QueryError):
        build_sql(QueryFilters(level="LOUD"), "hindsight")


def test_parse_time_forms() -> None:
    assert parse_time("15m", now=1000.0 + 900) == 1000 * 1_000_000
    assert parse_time("2026-01-01T00:00:00Z") == 1_767_225_600_000_000
    assert parse_time("1767225600") == 1_767_225_600_000_000
    with pytest.raises(QueryError):
        parse_time("last tuesday")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SELECT 1;",
        "SELECT 1 ;  \n",
        "SELECT ';' AS x",
        'SELECT "a;b" FROM t',
        "SELECT 1 -- ; x",
        "SELECT 1 # ; DROP TABLE t",  # '#' starts a comment in ClickHouse, as '--' does
    ],
)
def test_one_statement_allowed(sql: str) -> None:
    from pipeline.store.sandbox import _one_statement

    _one_statement(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DROP TABLE t",
        "SELECT 'a'';' ; SELECT 2",
        "SELECT 'it\\'s;'; SELECT 2",
        "SELECT 1 /* ; */; SELECT 2",
        "SELECT 1 # '\n; SELECT 2 -- '",  # the quote is inside the comment; the ';' after it is not
    ],
)
def test_second_statement_refused(sql: str) -> None:
    from pipeline.store.sandbox import _one_statement

    with pytest.raises(QueryError, match="one statement"):
        _one_statement(sql)


def test_times_beyond_the_store_range_are_refused() -> None:
    for filters in (QueryFilters(since_us=-1), QueryFilters(until_us=2**62)):
        with pytest.raises(QueryError, match="epoch microseconds"):
            build_sql(filters, "hindsight")


def test_the_table_shows_times_with_their_zone() -> None:
    from pipeline.store.render import format_table

    row = {"timestamp": "2026-11-30T22:59:25.882123+00:00", "service": "s", "level": "INFO", "message": "m"}
    table = format_table([row], columns=("timestamp", "service"))
    assert table.splitlines()[2].startswith("2026-11-30T22:59:25.882Z  s")
