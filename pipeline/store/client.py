"""Reading the store from any process: the store owner's query API (token, remote calls), or the
store itself when no sink holds it."""

from __future__ import annotations

import logging
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import orjson

from pipeline.errors import HindsightError, QueryError
from pipeline.settings import Settings
from pipeline.store.clickhouse import migrate, open_client
from pipeline.store.query import QueryFilters, run_query, store_summary
from pipeline.store.sandbox import SqlBounds, run_sql

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class QueryApi:
    """Where a store owner answers, and the bearer token it wants."""

    url: str
    token: str = ""
    fallback: str = ""  # the token the local store owner recorded, when it differs from `token`

    def __repr__(self) -> str:  # the tokens stay out of logs and tracebacks
        return f"QueryApi(url={self.url!r})"


def token_file(settings: Settings) -> Path:
    return settings.home / "query-api.token"


def server_token(settings: Settings) -> str:
    """The store owner's token: HINDSIGHT_API_TOKEN when set, else the one in <home>/query-api.token,
    else a new random one. Whichever it is, it is what the file holds afterwards (mode 0600): local
    clients on the same account agree with the running owner without the variable, and a file left
    by an earlier owner with another token is replaced rather than kept stale."""
    configured = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    path = token_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not configured:
        try:
            existing = path.read_text().strip()
        except FileNotFoundError:
            existing = ""
        if existing:
            return existing
    token = configured or secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    os.replace(tmp, path)  # atomic: a reader sees the old token or the new one
    return token


def query_api(settings: Settings) -> QueryApi:
    """The client's view: the configured token, and the one the local store owner recorded (tried
    when the configured one is refused: an owner started without the variable has its own)."""
    configured = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    try:
        recorded = token_file(settings).read_text().strip()
    except FileNotFoundError:
        recorded = ""
    if configured:
        return QueryApi(settings.query_url, configured, recorded if recorded != configured else "")
    return QueryApi(settings.query_url, recorded)


def remote_query(api: QueryApi, filters: QueryFilters, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Ask a running store owner; raises ConnectionError if none listens."""
    body = _get(api, f"/logs?{urllib.parse.urlencode(filters.to_params())}", timeout)
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def remote_sql(api: QueryApi, query: str, limit: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = orjson.loads(
        _get(api, f"/sql?{urllib.parse.urlencode({'q': query, 'limit': str(limit)})}", timeout)
    )
    return result


def remote_summary(api: QueryApi, timeout: float = 10.0) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(_get(api, "/summary", timeout))
    return result


def remote_stats(api: QueryApi, params: dict[str, str], timeout: float = 10.0) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = orjson.loads(
        _get(api, f"/stats?{urllib.parse.urlencode(params)}", timeout)
    )
    return result


def _get(api: QueryApi, path: str, timeout: float) -> bytes:
    url = api.url + path
    tokens = [api.token, api.fallback] if api.fallback else [api.token]
    for n, token in enumerate(tokens, 1):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            if exc.code == HTTPStatus.UNAUTHORIZED:
                if n < len(tokens):
                    continue  # the owner runs with the token it recorded
                raise QueryError(
                    f"query API at {api.url} refused the token: the sink runs with another "
                    "HINDSIGHT_API_TOKEN (the one it records in <home>/query-api.token on this machine)"
                ) from None
            raise QueryError(f"query API answered {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise ConnectionRefusedError(str(exc.reason)) from None
            raise HindsightError(f"query API at {api.url} unreachable: {exc.reason}") from None
    raise AssertionError("unreachable: the last token's refusal raises")


def _with_store(settings: Settings) -> Any:
    client = open_client(settings)
    migrate(client, settings.clickhouse_database)
    client.database = settings.clickhouse_database  # unqualified names in SQL: the project's tables
    return client


def _from_store(
    settings: Settings, remote: Callable[[], T], local: Callable[[Any], T], open_chdb: bool = True
) -> T:
    """Ask the store: a server directly; chDB via the running sink's query API, else by opening it
    here when no sink holds it and `open_chdb` (a long-running service must not: it would keep the
    data dir from the sink that starts next)."""
    if not settings.uses_server:
        try:
            return remote()
        except ConnectionRefusedError:
            if not open_chdb:
                raise
    client = _with_store(settings)
    try:
        return local(client)
    finally:
        client.close()


def query_logs(settings: Settings, filters: QueryFilters, open_chdb: bool = True) -> list[dict[str, Any]]:
    db = settings.clickhouse_database
    return _from_store(
        settings,
        lambda: remote_query(query_api(settings), filters),
        lambda c: run_query(c, filters, db),
        open_chdb,
    )


def summarize_store(settings: Settings, open_chdb: bool = True) -> dict[str, Any]:
    db = settings.clickhouse_database
    return _from_store(
        settings, lambda: remote_summary(query_api(settings)), lambda c: store_summary(c, db), open_chdb
    )


def sql_query(settings: Settings, text: str, limit: int) -> list[dict[str, Any]]:
    """A read-only SQL query (the store enforces readonly)."""
    db = settings.clickhouse_database
    bounds = SqlBounds(settings.sql_max_seconds, settings.sql_max_rows_read, settings.sql_max_memory_mb)
    return _from_store(
        settings,
        lambda: remote_sql(query_api(settings), text, limit),
        lambda c: run_sql(c, text, limit, db, bounds),
    )
