"""The store owner's read-only query API (127.0.0.1 by default): lets `hindsight query`, the support
page and other processes read while a sink holds the store. Bound parameters only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from pipeline.api.base import (
    DEFAULT_LIMITS,
    Api,
    ApiError,
    Call,
    Endpoint,
    Limits,
    Ok,
    Server,
    Tokens,
    json_response,
)
from pipeline.errors import ConfigError, QueryError
from pipeline.store.query import MAX_TIME_US, QueryFilters
from pipeline.types import Level

Runner = Callable[[QueryFilters], list[dict[str, Any]]]
Summary = Callable[[], dict[str, Any]]
Stats = Callable[[dict[str, str]], list[dict[str, Any]]]
Sql = Callable[[str, int], list[dict[str, Any]]]

Text = Annotated[str, Field(min_length=1)]
EpochUs = Annotated[int, Field(ge=0, le=MAX_TIME_US)]
ROWS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogsQuery(_Params):
    """Filters of GET /logs; every given one must match."""

    session: Text | None = Field(None, description="Session id")
    user: Text | None = Field(None, description="User id")
    service: Text | None = Field(None, description="Service name")
    endpoint: Text | None = Field(None, description="Endpoint (http.route)")
    transaction_id: Text | None = Field(None, description="Transaction id")
    # any level name or alias is accepted; the document lists the canonical names
    level: (
        Annotated[str, Field(min_length=1, json_schema_extra={"enum": [lv.name for lv in Level]})] | None
    ) = Field(None, description="Lowest level")
    since_us: EpochUs | None = Field(None, description="From (epoch microseconds)")
    until_us: EpochUs | None = Field(None, description="Until (epoch microseconds)")
    grep: Text | None = Field(None, description="Text in the body")
    attr: Text | None = Field(None, description="key=value of LogAttributes; several separated by newlines")
    trigger: Text | None = Field(None, description="Trigger reason or trigger id")
    rule: Text | None = Field(None, description="Id of a rule that matched")
    template: Text | None = Field(None, description="Template id of the message")
    limit: Annotated[int, Field(ge=1, le=100_000)] | None = Field(None, description="Most rows")


class StatsQuery(_Params):
    """Filters of GET /stats."""

    endpoint: Text | None = Field(None, description="Endpoint")
    since_us: EpochUs | None = Field(None, description="From (epoch microseconds)")
    limit: Annotated[int, Field(ge=1, le=100_000)] | None = Field(None, description="Most rows")


class SqlQuery(_Params):
    """GET /sql: one read-only SELECT."""

    q: Text = Field(description="SELECT")
    limit: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(None, description="Most rows")


def query_api(
    run: Runner, summary: Summary, stats: Stats | None = None, sql: Sql | None = None, *, token: str | Tokens
) -> Api:
    """The API: /logs, /summary, and /stats and /sql when the store offers them."""

    def bad_request(call: Callable[[], Response]) -> Response:
        try:
            return call()
        except QueryError as exc:
            raise ApiError(400, [("(query)", str(exc))]) from None

    def logs(call: Call) -> Response:
        rows = bad_request(lambda: _ndjson(run(QueryFilters.from_params(call.params))))
        return rows

    endpoints = [
        Endpoint(
            "GET",
            "/logs",
            logs,
            "Kept lines matching every given filter, newest last",
            Ok(200, "One JSON object per line", "application/x-ndjson", {"type": "string"}),
            query=LogsQuery,
            scope="read",
        ),
        Endpoint(
            "GET",
            "/summary",
            lambda call: json_response(summary()),
            "Lines and bytes kept, incidents",
            Ok(200, "Summary", schema={"type": "object"}),
            errors=(),
            scope="read",
        ),
    ]
    if stats is not None:
        endpoints.append(
            Endpoint(
                "GET",
                "/stats",
                lambda call: bad_request(lambda: json_response(stats(call.params))),
                "Endpoint window statistics",
                Ok(200, "Windows", schema=ROWS),
                query=StatsQuery,
                scope="read",
            )
        )
    if sql is not None:
        select = sql

        def run_sql(call: Call) -> Response:
            q = call.query
            assert isinstance(q, SqlQuery)
            return bad_request(lambda: json_response(select(q.q, q.limit or 10_000)))

        endpoints.append(
            Endpoint(
                "GET",
                "/sql",
                run_sql,
                "A read-only SQL query (the store enforces readonly)",
                Ok(200, "Rows", schema=ROWS),
                query=SqlQuery,
                scope="read",
            )
        )
    return Api("log-hindsight query", endpoints, token)


def _ndjson(rows: list[dict[str, Any]]) -> Response:
    body = b"".join(orjson.dumps(r, default=str) + b"\n" for r in rows)
    return Response(body, 200, media_type="application/x-ndjson")


def openapi(with_stats: bool = True, with_sql: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the query API."""

    def never(*_: Any) -> Any:
        raise AssertionError("only described, never called")

    return query_api(
        never, never, never if with_stats else None, never if with_sql else None, token="-"
    ).openapi()


class QueryServer(Server):
    """GET /logs?<filters> (JSON lines), /summary, /stats, /sql (read-only), behind a bearer token;
    /health and /openapi.json are open."""

    def __init__(
        self,
        host: str,
        port: int,
        run: Runner,
        summary: Summary,
        stats: Stats | None = None,
        sql: Sql | None = None,
        *,
        token: str | Tokens,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not token:
            raise ConfigError("the query API needs a token")
        api = query_api(run, summary, stats, sql, token=token)
        super().__init__("query API", api.app(), host, port, "HINDSIGHT_QUERY_PORT", limits)
