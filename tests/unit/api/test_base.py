"""The ASGI base every API runs on, over real sockets: auth, the error shape, 405 with Allow, body
limits, the deadline for a request's head, and the OpenAPI generated from the declarations."""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Annotated

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from pipeline.api.base import Api, ApiError, Call, Endpoint, Limits, Ok, Server, json_response
from pipeline.errors import ConfigError

TOKEN = "base-token"


class EchoQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: Annotated[int, Field(ge=1, le=10)] | None = Field(None, description="How many")


def echo(call: Call) -> Response:
    assert call.query is None or isinstance(call.query, EchoQuery)
    return json_response({"params": call.params, "n": call.query.n if call.query else None})


def upload(call: Call) -> Response:
    return json_response({"size": len(call.body)}, 201)


def boom(call: Call) -> Response:
    raise RuntimeError("secret dsn=postgres://u:p@h/db")


def named(call: Call) -> Response:
    return json_response({"name": call.path["name"]})


def refuse(call: Call) -> Response:
    raise ApiError(400, [("field", "bad")])


LIMITS = Limits(
    max_body_bytes=1000, body_timeout_s=1.0, header_timeout_s=0.5, keep_alive_s=1, max_connections=50
)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    api = Api(
        "test",
        [
            Endpoint("GET", "/echo", echo, "Echo", query=EchoQuery),
            Endpoint("POST", "/upload", upload, "Upload", Ok(201, "Stored")),
            Endpoint("PUT", "/upload", upload, "Replace", Ok(201, "Stored")),
            Endpoint("GET", "/boom", boom, "A bug"),
            Endpoint("GET", "/refuse", refuse, "Refuses"),
            Endpoint("GET", "/named/{name:any}", named, "Any text as a path parameter"),
        ],
        TOKEN,
        LIMITS,
    )
    server = Server("test API", api.app(), "127.0.0.1", 0, "TEST_PORT", LIMITS).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def call(
    url: str, method: str = "GET", body: bytes | None = None, token: str | None = TOKEN
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_auth_and_the_one_error_shape(base_url: str) -> None:
    status, _, body = call(f"{base_url}/health", token=None)  # every API has it, without a token
    assert status == 200 and orjson.loads(body) == {"status": "ok"}
    status, headers, body = call(f"{base_url}/echo", token=None)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert orjson.loads(body) == {"errors": [{"path": "(auth)", "message": "missing or wrong bearer token"}]}
    assert call(f"{base_url}/echo", token="wrong")[0] == 401
    assert orjson.loads(call(f"{base_url}/refuse")[2]) == {"errors": [{"path": "field", "message": "bad"}]}
    status, _, body = call(f"{base_url}/nowhere")
    assert status == 404 and orjson.loads(body)["errors"][0]["path"] == "(url)"


def test_an_any_path_parameter_takes_slashes_and_newlines(base_url: str) -> None:
    # Starlette's own `path` converter stops at a newline: such an id got a 404 from the router
    # instead of reaching the handler, whose answer is the documented one
    for raw in ("a", "a/b", "a\nb", "by\u00d7\n\u00b5", " x "):
        status, _, body = call(f"{base_url}/named/{urllib.parse.quote(raw, safe='')}")
        assert status == 200 and orjson.loads(body) == {"name": raw}, raw
    assert "/named/{name}" in orjson.loads(call(f"{base_url}/openapi.json")[2])["paths"]


def test_a_bug_answers_500_without_its_text(base_url: str) -> None:
    status, _, body = call(f"{base_url}/boom")
    assert status == 500 and b"dsn" not in body and b"internal error" in body


def test_query_parameters_are_validated_by_the_model(base_url: str) -> None:
    status, _, body = call(f"{base_url}/echo?n=3")
    assert status == 200 and orjson.loads(body) == {"params": {"n": "3"}, "n": 3}
    for query, path in (("n=11", "n"), ("n=x", "n"), ("m=1", "m"), ("n=1&n=2", "n"), ("n=", "n")):
        status, _, body = call(f"{base_url}/echo?{query}")
        assert status == 400 and orjson.loads(body)["errors"][0]["path"] == path, query


def test_405_names_exactly_the_declared_methods(base_url: str) -> None:
    status, headers, body = call(f"{base_url}/upload", "DELETE")
    assert status == 405 and headers["allow"] == "POST, PUT"
    assert orjson.loads(body)["errors"][0]["path"] == "(method)"
    assert call(f"{base_url}/echo", "HEAD")[0] == 405


def test_body_size_limit(base_url: str) -> None:
    assert orjson.loads(call(f"{base_url}/upload", "POST", b"x" * 1000)[2]) == {"size": 1000}
    assert call(f"{base_url}/upload", "POST", b"x" * 1001)[0] == 413


def _raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open that long."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return None
    return got


def test_slow_or_silent_clients_are_cut_off_and_do_not_block_others(base_url: str) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    idle = [_raw(port, b"") for _ in range(20)]
    half = [_raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\n") for _ in range(20)]  # head never ends
    slow_body = _raw(port, f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Length: 100\r\n\r\nabc".encode())  # fmt: skip
    assert call(f"{base_url}/health", token=None)[0] == 200  # the others do not hold the server
    for sock in idle + half:  # cut at the 0.5 s deadline for a request's head (never, without one)
        assert _closed_within(sock, 5) is not None
    answer = _closed_within(slow_body, 5)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408")
    for sock in [*idle, *half, slow_body]:
        sock.close()


def test_openapi_is_generated_from_the_declarations(base_url: str) -> None:
    doc = orjson.loads(call(f"{base_url}/openapi.json", token=None)[2])
    assert doc["openapi"].startswith("3.1") and doc["paths"]["/health"]["get"]["security"] == []
    [param] = doc["paths"]["/echo"]["get"]["parameters"]
    assert param == {
        "name": "n", "in": "query", "required": False, "description": "How many",
        "schema": {"type": "integer", "minimum": 1, "maximum": 10},
    }  # fmt: skip
    assert set(doc["paths"]["/upload"]) == {"post", "put"}
    assert doc["paths"]["/echo"]["get"]["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Errors"
    }


def test_a_taken_port_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        with pytest.raises(ConfigError, match="TEST_PORT"):
            Server("test API", Api("t", [], TOKEN).app(), "127.0.0.1", port, "TEST_PORT", LIMITS)


def test_error_answers_never_carry_credentials() -> None:
    from pipeline.api.base import ApiError

    err = ApiError(
        503,
        [
            ("(store)", "ClickHouse unreachable: HTTPDriver for https://admin:s3cr3t@ch.example:8443 failed"),
            ("(store)", "connect failed: host=db password=hunter2 user=x"),
        ],
    )
    text = str(err)
    assert "s3cr3t" not in text and "hunter2" not in text
    assert "https://***@ch.example:8443" in text and "password=***" in text


def test_two_hundred_half_open_connections_leave_room_for_a_normal_request() -> None:
    """With the default limits (as every service runs them), 200 clients that never finish their
    request's head do not keep a normal request from its answer."""
    api = Api("test", [Endpoint("GET", "/echo", echo, "Echo", query=EchoQuery)], TOKEN, Limits())
    server = Server("test API", api.app(), "127.0.0.1", 0, "TEST_PORT", Limits()).start()
    half: list[socket.socket] = []
    try:
        half = [_raw(server.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n") for _ in range(200)]
        status, _, body = call(f"http://127.0.0.1:{server.port}/echo?n=3")
        assert status == 200 and orjson.loads(body)["n"] == 3
    finally:
        for sock in half:
            sock.close()
        server.stop()


def test_the_metrics_server_cuts_off_clients_that_never_finish() -> None:
    """prometheus_client's threaded server had no socket timeout: each silent client held a thread."""
    from pipeline.metrics import serve
    from pipeline.settings import Settings

    server = serve(Settings(metrics_port=0, http_header_timeout_s=0.5))
    port = server.server_address[1]
    half: list[socket.socket] = []
    try:
        half = [_raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") for _ in range(200)]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            text = resp.read().decode()
        # the standard process and GC series, as every Prometheus client exports them
        standard = ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects_collected_total")
        for series in (*standard, "python_info"):
            assert f"\n{series}" in text, series
        for sock in half[:20]:
            assert _closed_within(sock, 5) is not None  # its thread is free again
    finally:
        for sock in half:
            sock.close()
        server.shutdown()


PATHS = {"GET": "read", "POST": "ingest", "PUT": "admin"}  # method -> path and scope, in the test below


def test_scoped_tokens_get_403_outside_their_scope() -> None:
    from pipeline.api.base import Tokens

    def ok(call: Call) -> Response:
        return json_response({"ok": True})

    endpoints = [
        Endpoint("GET", "/read", ok, "Read", scope="read"),
        Endpoint("POST", "/ingest", ok, "Ingest", scope="ingest"),
        Endpoint("PUT", "/admin", ok, "Admin", scope="admin"),
    ]
    api = Api("scoped", endpoints, Tokens("admin-t", read="read-t", ingest="ingest-t"), LIMITS)
    server = Server("scoped API", api.app(), "127.0.0.1", 0, "TEST_PORT", LIMITS).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        got = {
            (token, method): call(
                f"{base}/{PATHS[method]}", method, None if method == "GET" else b"{}", token
            )[0]
            for token in ("admin-t", "read-t", "ingest-t", "wrong", None)
            for method in ("GET", "POST", "PUT")
        }
    finally:
        server.stop()
    for (token, method), status in got.items():
        if token in (None, "wrong"):
            assert status == 401, (token, method)
        elif token == "admin-t" or token == f"{PATHS[method]}-t":
            assert status == 200, (token, method)
        else:
            assert status == 403, (token, method)
    doc = api.openapi()
    assert doc["paths"]["/read"]["get"]["x-hindsight-scope"] == "read"
    assert "403" in doc["paths"]["/admin"]["put"]["responses"]


def test_each_api_declares_the_scope_its_routes_need() -> None:
    from pipeline.api import control, query
    from pipeline.api.otlp import PATH

    control_doc = control.openapi()
    scopes = {
        (path, method): op.get("x-hindsight-scope")
        for path, ops in control_doc["paths"].items()
        for method, op in ops.items()
    }
    assert (
        scopes[("/rules", "get")]
        == scopes[("/captures", "post")]
        == scopes[("/rules/{id}", "put")]
        == "admin"
    )
    assert scopes[("/lines", "get")] == scopes[("/incidents", "get")] == "read"
    assert scopes[("/support", "get")] is None  # the page itself is public; it asks for a token
    query_doc = query.openapi(with_stats=True, with_sql=True)
    assert {op["x-hindsight-scope"] for ops in query_doc["paths"].values() for op in ops.values()
            if "x-hindsight-scope" in op} == {"read"}  # fmt: skip
    assert PATH == "/v1/logs"
