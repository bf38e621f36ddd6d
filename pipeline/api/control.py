"""The rules and captures HTTP API (bearer token, 127.0.0.1 by default), with an OpenAPI document.

GET/PUT/DELETE /rules/{id}, GET /rules, POST /rules:validate, POST /captures, GET /openapi.json,
GET /health. Nothing reaches the rules topic unless it validated; a bad field is a 400 naming its path.
"""

from __future__ import annotations

import hmac
import logging
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import orjson

from pipeline.api.query import parse_params
from pipeline.api.serve import bind
from pipeline.control import captures
from pipeline.control.rules import check_rule
from pipeline.errors import ConfigError, HindsightError, QueryError
from pipeline.rules.model import Rule, RuleError
from pipeline.rules.store import RuleReader, RuleStore
from pipeline.settings import Settings
from pipeline.store.client import query_logs, summarize_store
from pipeline.store.query import MAX_TIME_US, QueryFilters, build_sql, parse_duration

log = logging.getLogger(__name__)

MAX_BODY = 1_048_576


class ControlServer:
    """Serves the API in a thread; keeps a live view of the rules topic for reads."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_token is None or not settings.api_token.get_secret_value():
            raise ConfigError("the rules API needs a token: set HINDSIGHT_API_TOKEN")
        self.settings = settings
        self.rules: dict[str, Rule] = {}
        self.lock = threading.Lock()
        self.store = RuleStore(settings)
        self.reader = RuleReader(settings, self._replace_rules)
        self.httpd, self.thread = bind(
            "rules API", settings.api_host, settings.api_port, _handler(self), "HINDSIGHT_API_PORT"
        )

    def _replace_rules(self, rules: dict[str, Rule]) -> None:
        with self.lock:
            self.rules = rules

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> ControlServer:
        self.reader.start()
        self.reader.ready.wait(30)
        self.thread.start()
        log.info("rules api listening address=%s:%s", self.settings.api_host, self.port)
        return self

    def stop(self) -> None:
        self.reader.stop()
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorized(self, header: str | None) -> bool:
        token = self.settings.api_token
        assert token is not None
        given = header[7:] if header and header.startswith("Bearer ") else ""
        # constant time: the comparison does not reveal how much of a guess was right
        return hmac.compare_digest(given.encode(), token.get_secret_value().encode())


_CAPTURE_MAX_S = {"lookback": 30 * 86400, "follow": 7 * 86400}  # beyond any raw retention / a rule's follow
_ALLOWED = {
    "/health": ("GET",),
    "/openapi.json": ("GET",),
    "/rules": ("GET",),
    "/rules/{id}": ("GET", "PUT", "DELETE"),
    "/rules:validate": ("POST",),
    "/captures": ("POST",),
    "/lines": ("GET",),
    "/incidents": ("GET",),
    "/support": ("GET",),
    "/support.js": ("GET",),
    "/support.css": ("GET",),
}
# The support page's files: public (the page asks for the token; every call it makes sends it).
_STATIC = {
    "/support": ("index.html", "text/html; charset=utf-8"),
    "/support.js": ("support.js", "text/javascript; charset=utf-8"),
    "/support.css": ("support.css", "text/css; charset=utf-8"),
}
_SUPPORT_DIR = Path(__file__).with_name("support")
_LINES_PARAMS = {"user", "session", "since_us", "until_us", "limit"}


class UpstreamError(Exception):
    """The store owner's query API did not answer (503, not the client's fault)."""


def _errors(problems: list[tuple[str, str]]) -> dict[str, Any]:
    return {"errors": [{"path": path, "message": msg} for path, msg in problems]}


def _handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    settings = server.settings

    class Handler(BaseHTTPRequestHandler):
        server_version = "hindsight-rules"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("rules api " + format, *args)  # never logs headers, so never the token

        def _send(self, status: HTTPStatus, payload: Any = None) -> None:
            body = b"" if payload is None else orjson.dumps(payload)
            self.send_response(status)
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Bearer realm="hindsight"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def _body(self) -> Any:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise RuleError([("(body)", "bad Content-Length")]) from None
            if length > MAX_BODY:
                raise RuleError([("(body)", f"larger than {MAX_BODY} bytes")])
            raw = self.rfile.read(length) if length > 0 else b""
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise RuleError([("(body)", f"invalid JSON: {exc}")]) from None

        def _route(self, method: str) -> None:
            path = urllib.parse.urlsplit(self.path).path
            allowed = _ALLOWED.get("/rules/{id}" if path.startswith("/rules/") else path)
            if allowed is not None and method not in allowed:
                self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
                body = orjson.dumps(_errors([("(method)", f"{method} {path}: use {', '.join(allowed)}")]))
                self.send_header("Allow", ", ".join(allowed))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            if method == "GET" and path == "/health":
                return self._send(HTTPStatus.OK, {"status": "ok"})
            if method == "GET" and path == "/openapi.json":
                return self._send(HTTPStatus.OK, openapi())
            if method == "GET" and path in _STATIC:
                return self._static(*_STATIC[path])
            if not server.authorized(self.headers.get("Authorization")):
                return self._send(
                    HTTPStatus.UNAUTHORIZED,
                    _errors([("(auth)", "bearer token required")]),
                )
            try:
                if path == "/rules" and method == "GET":
                    with server.lock:
                        rules = sorted(server.rules.values(), key=lambda r: (-r.priority, r.id))
                    return self._send(HTTPStatus.OK, [r.model_dump(mode="json") for r in rules])
                if path == "/rules:validate" and method == "POST":
                    rule = check_rule(settings, self._body())
                    return self._send(HTTPStatus.OK, {"valid": True, "rule": rule.model_dump(mode="json")})
                if path == "/captures" and method == "POST":
                    return self._capture()
                if path == "/lines":
                    return self._lines()
                if path == "/incidents":
                    return self._incidents()
                if path.startswith("/rules/"):
                    return self._rule(method, urllib.parse.unquote(path[len("/rules/") :]))
                return self._send(HTTPStatus.NOT_FOUND, _errors([("(url)", f"no {method} {path}")]))
            except RuleError as exc:
                return self._send(HTTPStatus.BAD_REQUEST, _errors(exc.problems))
            except UpstreamError as exc:
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, _errors([("(store)", str(exc))]))
            except HindsightError as exc:
                log.error("rules api failed method=%s path=%s error=%s", method, path, exc)
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, _errors([("(server)", str(exc))]))
            except Exception:
                # a bug: answer it (and log it) rather than drop the connection
                log.exception("rules api error method=%s path=%s", method, path)
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _errors([("(server)", "internal error")]))

        def _rule(self, method: str, rule_id: str) -> None:
            if method == "GET":
                with server.lock:
                    rule = server.rules.get(rule_id)
                if rule is None:
                    return self._send(HTTPStatus.NOT_FOUND, _errors([("id", f"no rule {rule_id}")]))
                return self._send(HTTPStatus.OK, rule.model_dump(mode="json"))
            if method == "PUT":
                data = self._body()
                if isinstance(data, dict):
                    data.setdefault("id", rule_id)
                    if data["id"] != rule_id:
                        raise RuleError([("id", f"differs from the URL's id {rule_id!r}")])
                rule = check_rule(settings, data)
                server.store.put(rule)
                with server.lock:
                    server.rules[rule.id] = rule
                return self._send(HTTPStatus.OK, rule.model_dump(mode="json"))
            if method == "DELETE":
                with server.lock:
                    known = rule_id in server.rules
                if not known:
                    return self._send(HTTPStatus.NOT_FOUND, _errors([("id", f"no rule {rule_id}")]))
                server.store.delete(rule_id)
                with server.lock:
                    server.rules.pop(rule_id, None)
                return self._send(HTTPStatus.NO_CONTENT)
            return self._send(HTTPStatus.METHOD_NOT_ALLOWED, _errors([("(url)", method)]))

        def _static(self, name: str, ctype: str) -> None:
            body = (_SUPPORT_DIR / name).read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            # only this origin's scripts, styles and API; never framed; types as declared
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            )
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def _query_params(self, allowed: set[str]) -> dict[str, str]:
            try:
                # the same rules as the query API's, so nothing valid here is refused upstream
                params = parse_params(urllib.parse.urlsplit(self.path).query)
            except QueryError as exc:
                raise RuleError([("(query)", str(exc))]) from None
            unknown = set(params) - allowed
            if unknown:
                raise RuleError([(k, "unknown parameter") for k in sorted(unknown)])
            return params

        def _lines(self) -> None:
            """A user's (or session's) kept lines, from the store owner's query API."""
            params = self._query_params(_LINES_PARAMS)
            if "user" not in params and "session" not in params:
                raise RuleError([("user", "user or session is required")])
            try:
                filters = QueryFilters.from_params({"limit": "1000", **params})
                build_sql(filters, settings.clickhouse_database)  # validates before going upstream
            except QueryError as exc:
                raise RuleError([("(query)", str(exc))]) from None
            # a ClickHouse server directly; chDB through the sink that holds it
            rows = self._upstream(lambda: query_logs(settings, filters, open_chdb=False))
            return self._send(HTTPStatus.OK, rows)

        def _incidents(self) -> None:
            params = self._query_params({"limit"})
            try:
                limit = int(params.get("limit", "50"))
            except ValueError:
                raise RuleError([("limit", "must be a number")]) from None
            if not 1 <= limit <= 1000:
                raise RuleError([("limit", "must be within 1..1000")])
            summary = self._upstream(lambda: summarize_store(settings, open_chdb=False))
            return self._send(HTTPStatus.OK, list(reversed(summary["incidents"]))[:limit])

        def _upstream(self, call: Any) -> Any:
            try:
                return call()
            except QueryError as exc:
                if "answered 400" in str(exc):  # the request itself was refused: the client's to fix
                    raise RuleError([("(query)", str(exc))]) from None
                raise UpstreamError(f"the store refused the request ({exc})") from None
            except (ConnectionRefusedError, HindsightError) as exc:
                raise UpstreamError(
                    f"the store is not answering ({exc}); is `hindsight sink clickhouse` running?"
                ) from None

        def _capture(self) -> None:
            data = self._body()
            if not isinstance(data, dict):
                raise RuleError([("(body)", "expected a JSON object")])
            problems = []
            user = data.get("user_id")
            if not isinstance(user, str) or not user:
                problems.append(("user_id", "required, a non-empty string"))
            spans = {}
            for name, default in (("lookback", "30m"), ("follow", "15m")):
                value = data.get(name, default)
                try:
                    if not isinstance(value, str):
                        raise QueryError(f"{name} must be a string such as {default!r}")
                    spans[name] = parse_duration(value)
                    if spans[name] > _CAPTURE_MAX_S[name]:
                        raise QueryError(f"{name} is at most {_CAPTURE_MAX_S[name] // 86400} days")
                except HindsightError as exc:
                    problems.append((name, str(exc)))
            reason = data.get("reason", "")
            if not isinstance(reason, str):
                problems.append(("reason", "must be a string"))
            unknown = set(data) - {"user_id", "lookback", "follow", "reason"}
            problems.extend((k, "unknown field") for k in sorted(unknown))
            if problems:
                raise RuleError(problems)
            result = captures.start_capture(
                settings, str(user), spans["lookback"], spans["follow"], str(reason)
            )
            return self._send(HTTPStatus.CREATED, result)

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def __getattr__(self, name: str) -> Any:
            # any other method (PATCH, TRACE, ...) is answered 405 like the rest, not the stdlib's 501 page
            if name.startswith("do_"):
                return lambda: self._route(name[3:])
            raise AttributeError(name)

    return Handler


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (the rule schema comes from the pydantic model)."""
    schema = Rule.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(schema.pop("$defs", {}))
    components["Rule"] = schema
    components["Errors"] = {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "message"],
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                },
            }
        },
    }
    components["CaptureRequest"] = {
        "type": "object",
        "required": ["user_id"],
        "additionalProperties": False,
        "properties": {
            "user_id": {"type": "string", "minLength": 1},
            "lookback": {
                "type": "string",
                "default": "30m",
                "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$",
                "description": "At most 30 days.",
            },
            "follow": {
                "type": "string",
                "default": "15m",
                "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$",
                "description": "At most 7 days.",
            },
            "reason": {"type": "string"},
        },
    }
    ref = {"$ref": "#/components/schemas/Rule"}
    errors = {
        "description": "Invalid; each bad field with its path",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }
    unauthorized = {"description": "Missing or wrong bearer token"}
    unavailable = {
        "description": "The store (a running ClickHouse sink) is not answering",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }
    rule_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,128}$"},
    }
    ok_rule = {"description": "The rule", "content": {"application/json": {"schema": ref}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "log-hindsight rules and captures", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/rules": {
                "get": {
                    "summary": "Rules in force",
                    "responses": {
                        "200": {
                            "description": "Rules",
                            "content": {"application/json": {"schema": {"type": "array", "items": ref}}},
                        },
                        "401": unauthorized,
                    },
                }
            },
            "/rules/{id}": {
                "parameters": [rule_id],
                "get": {
                    "summary": "One rule",
                    "responses": {"200": ok_rule, "401": unauthorized, "404": errors},
                },
                "put": {
                    "summary": "Create or replace a rule",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
                    "responses": {"200": ok_rule, "400": errors, "401": unauthorized},
                },
                "delete": {
                    "summary": "Delete a rule (tombstone)",
                    "responses": {"204": {"description": "Deleted"}, "401": unauthorized, "404": errors},
                },
            },
            "/rules:validate": {
                "post": {
                    "summary": "Validate without storing",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
                    "responses": {"200": {"description": "Valid"}, "400": errors, "401": unauthorized},
                }
            },
            "/captures": {
                "post": {
                    "summary": "Support capture: history dump plus follow",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/CaptureRequest"}}
                        },
                    },
                    "responses": {
                        "201": {"description": "Capture started"},
                        "400": errors,
                        "401": unauthorized,
                    },
                }
            },
            "/health": {
                "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "OK"}}}
            },
            "/lines": {
                "get": {
                    "summary": "Kept lines of a user or session (from the store), oldest first",
                    "parameters": [
                        _query_param("user", {"type": "string", "minLength": 1}),
                        _query_param("session", {"type": "string", "minLength": 1}),
                        _query_param("since_us", {"type": "integer", "minimum": 0, "maximum": MAX_TIME_US}),
                        _query_param("until_us", {"type": "integer", "minimum": 0, "maximum": MAX_TIME_US}),
                        _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100_000}),
                    ],
                    "responses": {
                        "200": {
                            "description": "Lines",
                            "content": {
                                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}}
                            },
                        },
                        "400": errors,
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/incidents": {
                "get": {
                    "summary": "Recent incidents (distinct triggers) with their reasons, newest first",
                    "parameters": [_query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
                    "responses": {
                        "200": {
                            "description": "Incidents",
                            "content": {
                                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}}
                            },
                        },
                        "400": errors,
                        "401": unauthorized,
                        "503": unavailable,
                    },
                }
            },
            "/support": {
                "get": {
                    "summary": "The support page (HTML; it asks for the token)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }


def _query_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}
