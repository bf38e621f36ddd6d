"""The query API over real HTTP: filters reach the runner as bound values; bad requests get 400."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.api.query import QueryServer
from pipeline.errors import ConfigError, QueryError
from pipeline.store.client import QueryApi, remote_query, remote_summary
from pipeline.store.query import QueryFilters

TOKEN = "unit-token"


def test_filters_round_trip_and_errors() -> None:
    seen: list[QueryFilters] = []

    def run(filters: QueryFilters) -> list[dict[str, Any]]:
        seen.append(filters)
        return [{"message": "m1"}, {"message": "m2"}]

    server = QueryServer("127.0.0.1", 0, run, lambda: {"lines": 2}, token=TOKEN).start()
    try:
        url = QueryApi(f"http://127.0.0.1:{server.port}", TOKEN)
        filters = QueryFilters(session="s' OR 1=1", level="WARN", since_us=10, limit=7)
        assert remote_query(url, filters) == [{"message": "m1"}, {"message": "m2"}]
        assert seen == [filters]
        assert remote_summary(url) == {"lines": 2}
        with pytest.raises(QueryError, match="400"):
            _get_bad(url)
        with pytest.raises(ConfigError):
            QueryServer("127.0.0.1", server.port, run, lambda: {}, token=TOKEN)
    finally:
        server.stop()
    with pytest.raises(ConnectionRefusedError):
        remote_query(url, QueryFilters())


def _get_bad(url: QueryApi) -> None:
    from pipeline.store.client import _get

    _get(url, "/logs?sql=DROP+TABLE+x", 5)


def test_new_filters_and_sql_reach_the_store_owner() -> None:
    from pipeline.store.client import remote_sql

    seen: list[Any] = []

    def run(filters: QueryFilters) -> list[dict[str, Any]]:
        seen.append(filters)
        return []

    def sql(text: str, limit: int) -> list[dict[str, Any]]:
        seen.append((text, limit))
        return [{"n": 1}]

    server = QueryServer("127.0.0.1", 0, run, lambda: {}, None, sql, token=TOKEN).start()
    try:
        url = QueryApi(f"http://127.0.0.1:{server.port}", TOKEN)
        filters = QueryFilters(grep="50% off", attr=("tenant=acme", "k=a=b"), trigger="latency", rule="pci")
        remote_query(url, filters)
        assert seen == [filters]
        assert remote_sql(url, "SELECT 1", 5) == [{"n": 1}] and seen[-1] == ("SELECT 1", 5)
        with pytest.raises(QueryError, match="400"):
            remote_sql(url, "", 5)
    finally:
        server.stop()


def test_token_required_and_other_methods_refused() -> None:
    import urllib.error
    import urllib.request

    server = QueryServer("127.0.0.1", 0, lambda f: [{"secret": "row"}], lambda: {}, token=TOKEN).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(f"{base}/logs", headers=headers), timeout=5)
            assert err.value.code == 401 and b"row" not in err.value.read()
        with pytest.raises(QueryError, match="refused the token"):
            remote_query(QueryApi(base, "nope"), QueryFilters())
        assert remote_query(QueryApi(base, TOKEN), QueryFilters()) == [{"secret": "row"}]
        # health and the API description are open, so probes and tools need no secret
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=5) as resp:
            assert b'"/logs"' in resp.read()
        request = urllib.request.Request(
            f"{base}/logs", method="POST", data=b"{}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 405 and err.value.headers["Allow"] == "GET"
        with pytest.raises(QueryError, match="given twice"):
            _get_bad_query(QueryApi(base, TOKEN), "/logs?session=a&session=b")
    finally:
        server.stop()
    assert TOKEN not in repr(QueryApi(base, TOKEN))


def _get_bad_query(api: QueryApi, path: str) -> None:
    from pipeline.store.client import _get

    _get(api, path, 5)


def test_local_token_file_is_private_and_shared(tmp_path: Any) -> None:
    import stat

    from pydantic import SecretStr

    from pipeline.settings import Settings
    from pipeline.store.client import query_api, server_token, token_file

    settings = Settings(home=tmp_path)
    assert query_api(settings).token == ""  # no store owner has run yet
    token = server_token(settings)
    assert len(token) >= 32 and server_token(settings) == token  # a second owner reuses it
    assert stat.S_IMODE(token_file(settings).stat().st_mode) == 0o600
    assert query_api(settings).token == token
    configured = Settings(home=tmp_path, api_token=SecretStr("set-by-operator"))
    assert server_token(configured) == "set-by-operator" == query_api(configured).token
