"""The store owner's read-only query API on 127.0.0.1: lets `hindsight query` read while a sink runs."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from pipeline.errors import ConfigError, HindsightError, QueryError
from pipeline.query import QueryFilters

log = logging.getLogger(__name__)

Runner = Callable[[QueryFilters], list[dict[str, Any]]]
Summary = Callable[[], dict[str, Any]]
Stats = Callable[[dict[str, str]], list[dict[str, Any]]]
Sql = Callable[[str, int], list[dict[str, Any]]]


class QueryServer:
    """GET /health, GET /logs?<filters> (JSON lines), GET /summary. Bound parameters only."""

    def __init__(
        self,
        host: str,
        port: int,
        run: Runner,
        summary: Summary,
        stats: Stats | None = None,
        sql: Sql | None = None,
    ) -> None:
        handler = _handler(run, summary, stats, sql)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"query API cannot listen on {host}:{port} ({exc.strerror}); set HINDSIGHT_QUERY_PORT"
            ) from None
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="query-api", daemon=True)

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
    run: Runner, summary: Summary, stats: Stats | None, sql: Sql | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hindsight-query"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("query api " + format, *args)

        def _send(self, status: HTTPStatus, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            try:
                if url.path == "/health":
                    self._send(HTTPStatus.OK, b'{"status":"ok"}')
                elif url.path == "/logs":
                    params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=False))
                    rows = run(QueryFilters.from_params(params))
                    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
                    self._send(HTTPStatus.OK, body, "application/x-ndjson")
                elif url.path == "/stats" and stats is not None:
                    params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=False))
                    self._send(HTTPStatus.OK, orjson.dumps(stats(params)))
                elif url.path == "/sql" and sql is not None:
                    params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=False))
                    if not params.get("q"):
                        raise QueryError("/sql wants q=<SELECT ...>")
                    try:
                        limit = int(params.get("limit", "10000"))
                    except ValueError:
                        raise QueryError("limit must be a number") from None
                    self._send(HTTPStatus.OK, orjson.dumps(sql(params["q"], limit), default=str))
                elif url.path == "/summary":
                    self._send(HTTPStatus.OK, orjson.dumps(summary()))
                else:
                    self._send(HTTPStatus.NOT_FOUND, b'{"error":"not found"}')
            except QueryError as exc:
                self._send(HTTPStatus.BAD_REQUEST, orjson.dumps({"error": str(exc)}))
            except Exception as exc:
                log.exception("query api failed path=%s", url.path)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, orjson.dumps({"error": str(exc)}))

    return Handler


def remote_query(base_url: str, filters: QueryFilters, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Ask a running store owner; raises ConnectionError if none listens."""
    url = f"{base_url}/logs?{urllib.parse.urlencode(filters.to_params())}"
    return [orjson.loads(line) for line in _get(url, timeout).splitlines() if line.strip()]


def remote_sql(base_url: str, query: str, limit: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    url = f"{base_url}/sql?{urllib.parse.urlencode({'q': query, 'limit': str(limit)})}"
    result: list[dict[str, Any]] = orjson.loads(_get(url, timeout))
    return result


def remote_summary(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(_get(f"{base_url}/summary", timeout))
    return result


def remote_stats(base_url: str, params: dict[str, str], timeout: float = 10.0) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = orjson.loads(
        _get(f"{base_url}/stats?{urllib.parse.urlencode(params)}", timeout)
    )
    return result


def _get(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise QueryError(f"query API answered {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise ConnectionRefusedError(str(exc.reason)) from None
        raise HindsightError(f"query API at {url} unreachable: {exc.reason}") from None
