"""The query API over real HTTP: filters reach the runner as bound values; bad requests get 400."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import ConfigError, QueryError
from pipeline.query import QueryFilters
from pipeline.queryapi import QueryServer, remote_query, remote_summary


def test_filters_round_trip_and_errors() -> None:
    seen: list[QueryFilters] = []

    def run(filters: QueryFilters) -> list[dict[str, Any]]:
        seen.append(filters)
        return [{"message": "m1"}, {"message": "m2"}]

    server = QueryServer("127.0.0.1", 0, run, lambda: {"lines": 2}).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        filters = QueryFilters(session="s' OR 1=1", level="WARN", since_us=10, limit=7)
        assert remote_query(url, filters) == [{"message": "m1"}, {"message": "m2"}]
        assert seen == [filters]
        assert remote_summary(url) == {"lines": 2}
        with pytest.raises(QueryError, match="400"):
            _get_bad(url)
        with pytest.raises(ConfigError):
            QueryServer("127.0.0.1", server.port, run, lambda: {})
    finally:
        server.stop()
    with pytest.raises(ConnectionRefusedError):
        remote_query(url, QueryFilters())


def _get_bad(url: str) -> None:
    from pipeline.queryapi import _get

    _get(f"{url}/logs?sql=DROP+TABLE+x", 5)


def test_new_filters_and_sql_reach_the_store_owner() -> None:
    from pipeline.queryapi import remote_sql

    seen: list[Any] = []

    def run(filters: QueryFilters) -> list[dict[str, Any]]:
        seen.append(filters)
        return []

    def sql(text: str, limit: int) -> list[dict[str, Any]]:
        seen.append((text, limit))
        return [{"n": 1}]

    server = QueryServer("127.0.0.1", 0, run, lambda: {}, None, sql).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        filters = QueryFilters(grep="50% off", attr=("tenant=acme", "k=a=b"), trigger="latency", rule="pci")
        remote_query(url, filters)
        assert seen == [filters]
        assert remote_sql(url, "SELECT 1", 5) == [{"n": 1}] and seen[-1] == ("SELECT 1", 5)
        with pytest.raises(QueryError, match="400"):
            remote_sql(url, "", 5)
    finally:
        server.stop()
