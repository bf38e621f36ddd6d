"""The level poller against a local HTTP server (ETag, failures keep the last good answer) and the
OpenAPI document of the rules API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from pipeline.api.control import openapi
from pipeline.rules.compiled import RuleSet
from pipeline.rules.levelpoll import LevelPoller
from pipeline.rules.model import Rule


class LevelServer:
    """Answers GET with the current `mode`: ok, down (500), garbage, bad-level or slow."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.body: dict[str, Any] = {"default": "WARN", "services": {"checkout": "DEBUG"}}
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.hits += 1
                if owner.mode == "slow":
                    threading.Event().wait(1.0)
                if owner.mode == "down":
                    self.send_response(500)
                    self.end_headers()
                    return
                body = {
                    "ok": orjson.dumps(owner.body),
                    "garbage": b"<html>",
                    "bad-level": b'{"default": "LOUD"}',
                    "slow": orjson.dumps(owner.body),
                }[owner.mode]
                etag = '"v1"'
                if owner.mode == "ok" and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/levels"


@pytest.fixture
def server() -> Iterator[LevelServer]:
    s = LevelServer()
    yield s
    s.httpd.shutdown()


def test_poller_applies_levels_uses_etag_and_survives_a_failing_url(server: LevelServer) -> None:
    applied: list[list[Rule]] = []
    poller = LevelPoller(server.url, 1.0, 0.3, applied.append)
    assert poller.poll_once() is True
    assert RuleSet(applied[-1]).default_level == 13
    assert {r.id for r in applied[-1]} == {"level:default", "level:service:checkout"}
    assert poller.poll_once() is False and poller.metrics.not_modified == 1  # ETag: 304
    for mode in ("down", "garbage", "bad-level", "slow"):
        server.mode = mode
        assert poller.poll_once() is False
    assert poller.metrics.failures == 4
    assert "timed out" in poller.metrics.last_error or "unreachable" in poller.metrics.last_error
    assert len(applied) == 1 and poller.last_good == applied[0]  # the last good answer stays in force
    server.mode = "ok"
    server.body = {"default": "ERROR"}
    poller.etag = None
    assert poller.poll_once() is True and RuleSet(applied[-1]).default_level == 17


def test_poller_with_nothing_listening_keeps_running() -> None:
    poller = LevelPoller("http://127.0.0.1:9/levels", 1.0, 0.5, lambda rules: None)
    assert poller.poll_once() is False and poller.metrics.failures == 1


def test_openapi_refs_resolve_and_paths_are_described() -> None:
    doc = openapi()
    assert doc["openapi"].startswith("3.1")
    assert {"/rules", "/rules/{id}", "/rules:validate", "/captures", "/health"} <= set(doc["paths"])
    assert set(doc["paths"]["/rules/{id}"]) >= {"get", "put", "delete"}
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = list(refs(doc))
    assert found and all(r.startswith("#/components/schemas/") and r.split("/")[-1] in schemas for r in found)
    assert doc["security"] == [{"bearer": []}]
