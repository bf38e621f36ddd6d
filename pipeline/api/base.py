"""One ASGI base for every HTTP API: routes declared once (their OpenAPI generated from the same
declarations and pydantic models), bearer auth, one JSON error shape, body-size and time limits, a
connection cap, 405 with Allow; served by uvicorn in a thread."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import h11
import orjson
import uvicorn
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.errors import ConfigError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Problems = list[tuple[str, str]]


_CREDENTIALS = re.compile(
    r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@|\b(password|passwd|pwd|secret|token)=[^&\s]+"
)


def scrub(text: str) -> str:
    """A message without the credentials a store's error may carry (a DSN's user:password@)."""
    return _CREDENTIALS.sub(lambda m: f"{m[1]}***@" if m[1] else f"{m[2]}=***", text)


class ApiError(Exception):
    """An answer other than success: status, each problem with its path, extra headers. Messages are
    scrubbed of credentials: a store's error text can name its DSN."""

    def __init__(self, status: int, problems: Problems, headers: dict[str, str] | None = None) -> None:
        problems = [(path, scrub(msg)) for path, msg in problems]
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.status = status
        self.problems = problems
        self.headers = headers or {}


def errors_body(problems: Problems) -> bytes:
    """The one error shape of every API but OTLP (whose spec wants a google.rpc.Status)."""
    return orjson.dumps({"errors": [{"path": path, "message": msg} for path, msg in problems]})


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, default=str), status, headers, "application/json")


ERRORS_SCHEMA: dict[str, Any] = {
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
_ERROR_TEXT = {
    400: "Invalid request; each bad field with its path",
    401: "Missing or wrong bearer token",
    403: "The token is not allowed this endpoint's scope",
    404: "Not found",
    413: "Body too large",
    503: "A service behind this one is not answering",
}


@dataclass(frozen=True)
class Ok:
    """The success answer of an endpoint, for the OpenAPI document."""

    status: int = 200
    description: str = "OK"
    media_type: str = "application/json"
    schema: dict[str, Any] | None = field(default_factory=dict)


@dataclass
class Call:
    """What a handler gets: query parameters (raw and validated), path parameters and the body."""

    request: Request
    params: dict[str, str]
    query: BaseModel | None
    path: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, [("(body)", f"invalid JSON: {exc}")]) from None


Handler = Callable[[Call], Response]


@dataclass(frozen=True)
class Endpoint:
    """One route: method, path, handler (sync; runs in a worker thread) and what the OpenAPI says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    ok: Ok = Ok()
    query: type[BaseModel] | None = None  # query parameters: validated, unknown ones refused
    body: dict[str, Any] | None = None  # request body's JSON schema
    errors: tuple[int, ...] = (400,)
    public: bool = False  # no token needed (health, OpenAPI, static pages)
    scope: TokenScope = "admin"  # what a token must be allowed: ingest, read or admin
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw_query: bool = False  # the handler checks its own query string (OTLP: none expected)


TokenScope = Literal["ingest", "read", "admin"]
ALL_SCOPES: frozenset[str] = frozenset(("ingest", "read", "admin"))


class Tokens:
    """Bearer tokens and what each may do. HINDSIGHT_API_TOKEN may do everything; a read token only
    reads (query, lines, incidents, stats, SQL); an ingest token only sends logs (OTLP). A service
    that only ships logs then never holds a token that reads them or changes rules."""

    def __init__(self, admin: str | None, read: str | None = None, ingest: str | None = None) -> None:
        self._tokens: list[tuple[bytes, frozenset[str]]] = [
            (token.encode(), scopes)
            for token, scopes in (
                (admin, ALL_SCOPES),
                (read, frozenset({"read"})),
                (ingest, frozenset({"ingest"})),
            )
            if token
        ]

    @classmethod
    def from_settings(cls, settings: Settings, admin: str | None = None) -> Tokens:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return cls(
            admin or secret(settings.api_token), secret(settings.read_token), secret(settings.ingest_token)
        )

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def scopes(self, given: bytes) -> frozenset[str] | None:
        """What the token may do; None for an unknown token. Every token is compared, each in constant
        time, so the answer's timing reveals neither which token nor how much of a guess was right."""
        found: frozenset[str] | None = None
        for token, scopes in self._tokens:
            if hmac.compare_digest(given, token):
                found = scopes
        return found


@dataclass(frozen=True)
class Limits:
    """What one client may hold of a server."""

    max_body_bytes: int = 1_048_576
    body_timeout_s: float = 10.0  # to send a whole body
    header_timeout_s: float = 10.0  # to send a request's head, from connect or from the last answer
    keep_alive_s: int = 5  # idle between requests
    max_connections: int = 1000  # beyond this, new connections get 503

    @classmethod
    def from_settings(cls, settings: Settings, max_body_bytes: int | None = None) -> Limits:
        return cls(
            max_body_bytes or settings.http_max_body_bytes,
            settings.http_body_timeout_s,
            settings.http_header_timeout_s,
            settings.http_keep_alive_s,
            settings.http_max_connections,
        )


def parse_params(query: str) -> dict[str, str]:
    """A query string's parameters; 400 for invalid UTF-8, a repeated or empty one, or a NUL."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, [("(query)", "query string is not valid UTF-8")]) from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise ApiError(400, [(key, "given twice")])
        if not value:
            raise ApiError(400, [(key, "is empty")])
        if "\x00" in value:
            raise ApiError(400, [(key, "contains a NUL character")])
        params[key] = value
    return params


def validation_problems(exc: ValidationError) -> Problems:
    return [(".".join(str(p) for p in e["loc"]) or "(root)", e["msg"]) for e in exc.errors()]


DEFAULT_LIMITS = Limits()


class Api:
    """An API: its endpoints, its token, its limits; `app()` is the ASGI app, `openapi()` its document."""

    def __init__(
        self,
        title: str,
        endpoints: Sequence[Endpoint],
        token: str | Tokens | None,
        limits: Limits = DEFAULT_LIMITS,
        components: dict[str, Any] | None = None,
        error_response: Callable[[ApiError, Request], Response] | None = None,
    ) -> None:
        self.title = title
        self.endpoints = list(endpoints)
        self.tokens = token if isinstance(token, Tokens) else Tokens(token)
        self.limits = limits
        self.components = components or {}
        self.error_response = error_response or _json_error
        # every API answers these two without a token: liveness probes and tools need no secret
        self.endpoints.append(Endpoint("GET", "/health", _health, "Liveness", public=True, errors=()))
        self.endpoints.append(Endpoint("GET", "/openapi.json", self._openapi, "This document", public=True))

    def _openapi(self, call: Call) -> Response:
        return json_response(self.openapi())

    def authorize(self, request: Request, ep: Endpoint) -> None:
        """ApiError 401 without a known token, 403 with a token not allowed this endpoint's scope."""
        header = request.headers.get("authorization") or ""
        given = header[7:] if header.startswith("Bearer ") else ""
        scopes = self.tokens.scopes(given.encode("utf-8", "replace")) if given else None
        if scopes is None:
            raise ApiError(
                401,
                [("(auth)", "missing or wrong bearer token")],
                {"WWW-Authenticate": 'Bearer realm="hindsight"'},
            )
        if ep.scope not in scopes:
            raise ApiError(
                403,
                [
                    (
                        "(auth)",
                        f"this token may {', '.join(sorted(scopes))}; {ep.method} {ep.path} needs {ep.scope}",
                    )
                ],
            )

    def app(self) -> Starlette:
        by_path: dict[str, dict[str, Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, {})[ep.method] = ep
        # Routes are plain ASGI apps, so they accept every method; the dispatcher answers 405 with
        # exactly the declared ones in Allow (Starlette's own 405 would add HEAD to every GET).
        routes = [Route(path, self._dispatch(methods)) for path, methods in by_path.items()]

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            text = f"no {request.method} {request.url.path}"
            return self.error_response(ApiError(exc.status_code, [("(url)", text)]), request)

        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    def _dispatch(self, methods: dict[str, Endpoint]) -> ASGIApp:
        async def endpoint(request: Request) -> Response:
            ep = methods.get(request.method)
            try:
                if ep is None:
                    allowed = ", ".join(methods)
                    raise ApiError(
                        405,
                        [("(method)", f"{request.method} {request.url.path}: use {allowed}")],
                        {"Allow": allowed},
                    )
                if not ep.public:
                    self.authorize(request, ep)
                params: dict[str, str] = {} if ep.raw_query else parse_params(request.url.query)
                query = _validated(ep.query, params) if not ep.raw_query else None
                body = await self._body(request) if ep.method in ("POST", "PUT", "PATCH") else b""
                call = Call(request, params, query, dict(request.path_params), body)
                return await run_in_threadpool(ep.handler, call)
            except ApiError as exc:
                return self.error_response(exc, request)
            except Exception:
                # a bug: answer it (and log it) without echoing the exception text to the client
                log.exception("api error method=%s path=%s", request.method, request.url.path)
                return self.error_response(ApiError(500, [("(server)", "internal error")]), request)

        return _Asgi(endpoint)

    async def _body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise ApiError(413, [("(body)", f"larger than {limit} bytes")], {"Connection": "close"})
            except ValueError:
                raise ApiError(400, [("(body)", "bad Content-Length")]) from None
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, [("(body)", f"larger than {limit} bytes")], {"Connection": "close"})
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), self.limits.body_timeout_s)
        except TimeoutError:
            raise ApiError(
                408, [("(body)", f"not sent within {self.limits.body_timeout_s} s")], {"Connection": "close"}
            ) from None
        return b"".join(chunks)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document, generated from the endpoints and their models."""
        paths: dict[str, Any] = {}
        for ep in self.endpoints:
            op: dict[str, Any] = {"summary": ep.summary, "responses": {}}
            if ep.public:
                op["security"] = []
            else:
                op["x-hindsight-scope"] = ep.scope  # the token scope it needs (docs/operations.md)
            params = [
                {"name": name, "in": "path", "required": True, "schema": schema}
                for name, schema in ep.path_params.items()
            ]
            if ep.query is not None:
                params += query_parameters(ep.query)
            if params:
                op["parameters"] = params
            if ep.body is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ep.body}}}
            ok: dict[str, Any] = {"description": ep.ok.description}
            if ep.ok.schema is not None:
                ok["content"] = {ep.ok.media_type: {"schema": ep.ok.schema}}
            op["responses"][str(ep.ok.status)] = ok
            codes = list(ep.errors) + ([] if ep.public else [401, 403])
            for code in codes:
                op["responses"][str(code)] = {
                    "description": _ERROR_TEXT.get(code, "Error"),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
                }
            # Starlette's converters ({id:any}) are not OpenAPI's
            paths.setdefault(re.sub(r"\{(\w+):\w+\}", r"{\1}", ep.path), {})[ep.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": "1"},
            "components": {
                "schemas": {**self.components, "Errors": ERRORS_SCHEMA},
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
            "paths": paths,
        }


class _AnyText(Convertor[str]):
    """A path parameter that may hold any text, "/" and newlines too: Starlette's own `path`
    (`.*`) stops at a newline, so `/rules/a%0Ab` fell through to a 404 instead of the handler's
    own answer (the API fuzzer found it)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any", _AnyText())


class _Asgi:
    """A request handler as a plain ASGI app (Starlette routes those for every method)."""

    def __init__(self, handle: Callable[[Request], Any]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)


def _validated(model: type[BaseModel] | None, params: dict[str, str]) -> BaseModel | None:
    if model is None:
        if params:
            raise ApiError(400, [(k, "unknown parameter") for k in sorted(params)])
        return None
    unknown = set(params) - set(model.model_fields)
    if unknown:
        raise ApiError(400, [(k, "unknown parameter") for k in sorted(unknown)])
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise ApiError(400, validation_problems(exc)) from None


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a pydantic model (null branches of optional fields dropped)."""
    schema = model.model_json_schema()
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        prop.pop("default", None)
        if "anyOf" in prop:
            branches = [b for b in prop.pop("anyOf") if b.get("type") != "null"]
            if len(branches) == 1:
                prop.update(branches[0])
            else:
                prop["anyOf"] = branches
        out.append(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", []),
                "schema": prop,
                "description": description,
            }
        )
    return out


def _health(call: Call) -> Response:
    return json_response({"status": "ok"})


def _json_error(exc: ApiError, request: Request) -> Response:
    headers = dict(exc.headers)
    return Response(errors_body(exc.problems), exc.status, headers, "application/json")


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for a request's head: a client that connects and sends
    nothing, or sends its headers a byte at a time, is closed after header_timeout_s (uvicorn's own
    timer is reset by every byte received)."""

    header_timeout_s = 10.0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)
        self._cycle_at_arm = self.cycle

    def _expire(self) -> None:
        if self.cycle is self._cycle_at_arm and not self.transport.is_closing():
            self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._cycle_at_arm:  # a request's head arrived in time
            self._deadline.cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._deadline.cancel()
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)


class Server:
    """An ASGI app served by uvicorn in a daemon thread; the port is bound at construction, so a
    taken port is a clear error naming the setting, and port 0 picks a free one."""

    def __init__(self, what: str, app: Any, host: str, port: int, port_setting: str, limits: Limits) -> None:
        self.what = what
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(
                f"{what} cannot listen on {host}:{port} ({exc.strerror}); set {port_setting}"
            ) from None
        self.host = host
        protocol = type("Protocol", (_Protocol,), {"header_timeout_s": limits.header_timeout_s})
        config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=limits.keep_alive_s,
            limit_concurrency=limits.max_connections,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=what, daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self) -> Self:
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            time.sleep(0.01)
        log.info("%s listening address=%s:%s", self.what, self.host, self.port)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
