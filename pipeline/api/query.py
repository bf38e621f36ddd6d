"""The store owner's read-only query API on 127.0.0.1: lets `hindsight query` read while a sink runs."""

from __future__ import annotations

import hmac
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from pipeline.api.serve import bind
from pipeline.errors import ConfigError, QueryError
from pipeline.store.query import MAX_TIME_US, QueryFilters
from pipeline.types import Level

log = logging.getLogger(__name__)

Runner = Callable[[QueryFilters], list[dict[str, Any]]]
Summary = Callable[[], dict[str, Any]]
Stats = Callable[[dict[str, str]], list[dict[str, Any]]]
Sql = Callable[[str, int], list[dict[str, Any]]]

_PUBLIC = {"/health", "/openapi.json"}


class QueryServer:
    """GET /logs?<filters> (JSON lines), /summary, /stats, /sql (read-only), behind a bearer token;
    /health and /openapi.json are open. Bound parameters only."""

    def __init__(
        self,
        host: str,
        port: int,
        run: Runner,
        summary: Summary,
        stats: Stats | None = None,
        sql: Sql | None = None,
        *,
        token: str,
    ) -> None:
        if not token:
            raise ConfigError("the query API needs a token")
        handler = _handler(run, summary, stats, sql, token.encode())
        self.httpd, self.thread = bind("query API", host, port, handler, "HINDSIGHT_QUERY_PORT")

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> QueryServer:
        self.thread.start()
        log.info("query api listening address=%s:%s", *self.httpd.server_address[:2])
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(
    run: Runner, summary: Summary, stats: Stats | None, sql: Sql | None, token: bytes
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hindsight-query"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("query api " + format, *args)  # never logs headers, so never the token

        def _send(self, status: HTTPStatus, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Bearer realm="hindsight"')
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", "GET")
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization") or ""
            given = header[7:] if header.startswith("Bearer ") else ""
            # constant time: the comparison does not reveal how much of a guess was right
            return hmac.compare_digest(given.encode("utf-8", "replace"), token)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            try:
                if url.path not in _PUBLIC and not self._authorized():
                    self._send(HTTPStatus.UNAUTHORIZED, b'{"error":"missing or wrong bearer token"}')
                    return
                params = parse_params(url.query)
                if url.path == "/health":
                    self._send(HTTPStatus.OK, b'{"status":"ok"}')
                elif url.path == "/openapi.json":
                    self._send(HTTPStatus.OK, orjson.dumps(openapi(stats is not None, sql is not None)))
                elif url.path == "/logs":
                    rows = run(QueryFilters.from_params(params))
                    body = b"".join(orjson.dumps(r, default=str) + b"\n" for r in rows)
                    self._send(HTTPStatus.OK, body, "application/x-ndjson")
                elif url.path == "/stats" and stats is not None:
                    self._send(HTTPStatus.OK, orjson.dumps(stats(params), default=str))
                elif url.path == "/sql" and sql is not None:
                    unknown = set(params) - {"q", "limit"}
                    if unknown:
                        raise QueryError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
                    if not params.get("q"):
                        raise QueryError("/sql wants q=<SELECT ...>")
                    try:
                        limit = int(params.get("limit", "10000"))
                    except ValueError:
                        raise QueryError("limit must be a number") from None
                    self._send(HTTPStatus.OK, orjson.dumps(sql(params["q"], limit), default=str))
                elif url.path == "/summary":
                    self._send(HTTPStatus.OK, orjson.dumps(summary(), default=str))
                else:
                    self._send(HTTPStatus.NOT_FOUND, b'{"error":"not found"}')
            except QueryError as exc:
                self._send(HTTPStatus.BAD_REQUEST, orjson.dumps({"error": str(exc)}))
            except Exception as exc:
                log.exception("query api failed path=%s", url.path)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, orjson.dumps({"error": str(exc)}))

        def __getattr__(self, name: str) -> Any:
            # every other method (POST, PUT, PATCH, ...) is a 405 with Allow, not the stdlib's 501 page
            if name.startswith("do_"):
                return lambda: self._send(
                    HTTPStatus.METHOD_NOT_ALLOWED, b'{"error":"read-only API: use GET"}'
                )
            raise AttributeError(name)

    return Handler


def parse_params(query: str) -> dict[str, str]:
    """A query string's parameters; QueryError for invalid UTF-8, a repeated or empty one, or a NUL."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise QueryError("query string is not valid UTF-8") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise QueryError(f"parameter {key!r} given twice")
        if not value:
            raise QueryError(f"parameter {key!r} is empty")
        if "\x00" in value:
            raise QueryError(f"parameter {key!r} contains a NUL character")
        params[key] = value
    return params


def openapi(with_stats: bool = True, with_sql: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the query API."""

    def param(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}

    text = {"type": "string", "minLength": 1}
    error = {"description": "Bad request", "content": {"application/json": {"schema": _ERROR}}}
    unauthorized = {
        "description": "Missing or wrong bearer token",
        "content": {"application/json": {"schema": _ERROR}},
    }
    rows = {"type": "array", "items": {"type": "object"}}
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": {"description": "Up", "content": {"application/json": {"schema": {}}}}},
            }
        },
        "/logs": {
            "get": {
                "summary": "Kept lines matching every given filter, newest last",
                "parameters": [
                    param("session", text, "Session id"),
                    param("user", text, "User id"),
                    param("service", text, "Service name"),
                    param("endpoint", text, "Endpoint (http.route)"),
                    param("transaction_id", text, "Transaction id"),
                    param("level", {"type": "string", "enum": [lv.name for lv in Level]}, "Lowest level"),
                    param("since_us", _EPOCH_US, "From (epoch microseconds)"),
                    param("until_us", _EPOCH_US, "Until (epoch microseconds)"),
                    param("grep", text, "Text in the body"),
                    param("attr", text, "key=value of LogAttributes; several separated by newlines"),
                    param("trigger", text, "Trigger reason or trigger id"),
                    param("rule", text, "Id of a rule that matched"),
                    param("limit", {"type": "integer", "minimum": 1, "maximum": 100_000}, "Most rows"),
                ],
                "responses": {
                    "200": {
                        "description": "One JSON object per line",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    "400": error,
                    "401": unauthorized,
                },
            }
        },
        "/summary": {
            "get": {
                "summary": "Lines and bytes kept, incidents",
                "responses": {
                    "200": {
                        "description": "Summary",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": unauthorized,
                },
            }
        },
    }
    if with_stats:
        paths["/stats"] = {
            "get": {
                "summary": "Endpoint window statistics",
                "parameters": [
                    param("endpoint", text, "Endpoint"),
                    param("since_us", _EPOCH_US, "From (epoch microseconds)"),
                    param("limit", {"type": "integer", "minimum": 1, "maximum": 100_000}, "Most rows"),
                ],
                "responses": {
                    "200": {"description": "Windows", "content": {"application/json": {"schema": rows}}},
                    "400": error,
                    "401": unauthorized,
                },
            }
        }
    if with_sql:
        paths["/sql"] = {
            "get": {
                "summary": "A read-only SQL query (the store enforces readonly)",
                "parameters": [
                    {"name": "q", "in": "query", "required": True, "schema": text, "description": "SELECT"},
                    param("limit", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "Most rows"),
                ],
                "responses": {
                    "200": {"description": "Rows", "content": {"application/json": {"schema": rows}}},
                    "400": error,
                    "401": unauthorized,
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "log-hindsight query", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_EPOCH_US = {"type": "integer", "minimum": 0, "maximum": MAX_TIME_US}
