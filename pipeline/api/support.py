"""The support page (served by the rules API process): its static files, and the two reads it makes
of the store, a user's kept lines and recent incidents, through the store owner's query API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from pipeline.api.base import ApiError, Call, Endpoint, Ok, json_response
from pipeline.errors import HindsightError, QueryError
from pipeline.settings import Settings
from pipeline.store.client import query_logs, summarize_store
from pipeline.store.query import MAX_TIME_US, QueryFilters, build_sql

STATIC_DIR = Path(__file__).with_name("support")
# only this origin's scripts, styles and API; never framed; types as declared
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_FILES = {
    "/support": ("index.html", "text/html; charset=utf-8", "The support page (HTML; it asks for the token)"),
    "/support.js": ("support.js", "text/javascript; charset=utf-8", "The support page's script"),
    "/support.css": ("support.css", "text/css; charset=utf-8", "The support page's styles"),
}
ROWS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}


class LinesQuery(BaseModel):
    """GET /lines: a user's or a session's kept lines."""

    model_config = ConfigDict(extra="forbid")
    user: Annotated[str, Field(min_length=1)] | None = None
    session: Annotated[str, Field(min_length=1)] | None = None
    since_us: Annotated[int, Field(ge=0, le=MAX_TIME_US)] | None = None
    until_us: Annotated[int, Field(ge=0, le=MAX_TIME_US)] | None = None
    limit: Annotated[int, Field(ge=1, le=100_000)] | None = None


class IncidentsQuery(BaseModel):
    """GET /incidents: the most recent incidents."""

    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=1000)] | None = None


def _static(name: str, media_type: str) -> Any:
    def serve(call: Call) -> Response:
        return Response((STATIC_DIR / name).read_bytes(), 200, _HEADERS, media_type)

    return serve


def _upstream(call: Any) -> Any:
    """Ask the store owner: its refusal of a request is the client's to fix (400), its silence ours (503)."""
    try:
        return call()
    except QueryError as exc:
        if "answered 400" in str(exc):
            raise ApiError(400, [("(query)", str(exc))]) from None
        raise ApiError(503, [("(store)", f"the store refused the request ({exc})")]) from None
    except (ConnectionRefusedError, HindsightError) as exc:
        raise ApiError(
            503, [("(store)", f"the store is not answering ({exc}); is `hindsight sink clickhouse` running?")]
        ) from None


def support_endpoints(settings: Settings) -> list[Endpoint]:
    def lines(call: Call) -> Response:
        if "user" not in call.params and "session" not in call.params:
            raise ApiError(400, [("user", "user or session is required")])
        try:
            filters = QueryFilters.from_params({"limit": "1000", **call.params})
            build_sql(filters, settings.clickhouse_database)  # validates before going upstream
        except QueryError as exc:
            raise ApiError(400, [("(query)", str(exc))]) from None
        # a ClickHouse server directly; chDB through the sink that holds it
        return json_response(_upstream(lambda: query_logs(settings, filters, open_chdb=False)))

    def incidents(call: Call) -> Response:
        assert isinstance(call.query, IncidentsQuery)
        limit = call.query.limit or 50
        summary = _upstream(lambda: summarize_store(settings, open_chdb=False))
        return json_response(list(reversed(summary["incidents"]))[:limit])

    files = [
        Endpoint(
            "GET",
            path,
            _static(name, ctype),
            text,
            Ok(200, "Page", ctype.split(";")[0], {"type": "string"}),
            public=True,
            errors=(),
        )
        for path, (name, ctype, text) in _FILES.items()
    ]
    return [
        *files,
        Endpoint(
            "GET",
            "/lines",
            lines,
            "Kept lines of a user or session (from the store), oldest first",
            Ok(200, "Lines", schema=ROWS),
            query=LinesQuery,
            errors=(400, 503),
            scope="read",
        ),
        Endpoint(
            "GET",
            "/incidents",
            incidents,
            "Recent incidents (distinct triggers) with their reasons, newest first",
            Ok(200, "Incidents", schema=ROWS),
            query=IncidentsQuery,
            errors=(400, 503),
            scope="read",
        ),
    ]
