"""One token flow in README order: the store owner records the token it runs with; a client with
another HINDSIGHT_API_TOKEN (the rules API, a shell) falls back to the recorded one; a stale file
left by an earlier owner is replaced, not trusted."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.responses import Response

from pipeline.api.base import DEFAULT_LIMITS, Api, Call, Endpoint, Server, json_response
from pipeline.errors import QueryError
from pipeline.settings import Settings
from pipeline.store.client import QueryApi, query_api, remote_summary, server_token, token_file


def summary(call: Call) -> Response:
    return json_response({"lines": 7})


@pytest.fixture
def owner_url() -> Iterator[str]:
    api = Api("query API", [Endpoint("GET", "/summary", summary, "Summary")], "owner-token", DEFAULT_LIMITS)
    server = Server("query API", api.app(), "127.0.0.1", 0, "HINDSIGHT_QUERY_PORT", DEFAULT_LIMITS).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_the_owner_records_its_token_and_replaces_a_stale_one(tmp_path: Path) -> None:
    plain = Settings(home=tmp_path)
    first = server_token(plain)  # no variable: a random token, recorded
    assert token_file(plain).read_text() == first and server_token(plain) == first
    assert stat.S_IMODE(token_file(plain).stat().st_mode) == 0o600
    configured = Settings(home=tmp_path, api_token=SecretStr("from-the-variable"))
    assert server_token(configured) == "from-the-variable"
    assert token_file(plain).read_text() == "from-the-variable"  # not the stale random one
    assert query_api(plain).token == "from-the-variable"  # a plain `hindsight query` agrees


def test_a_client_with_another_token_falls_back_to_the_recorded_one(owner_url: str, tmp_path: Path) -> None:
    assert remote_summary(QueryApi(owner_url, "env-token", "owner-token")) == {"lines": 7}
    with pytest.raises(QueryError, match="refused the token: the sink runs with another"):
        remote_summary(QueryApi(owner_url, "env-token"))
    settings = Settings(home=tmp_path, api_token=SecretStr("env-token"))
    token_file(settings).parent.mkdir(parents=True, exist_ok=True)
    token_file(settings).write_text("owner-token")
    api = query_api(settings)
    assert (api.token, api.fallback) == ("env-token", "owner-token")
