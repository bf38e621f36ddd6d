"""File and webhook sinks, routing and redaction (no Kafka: the runner is tested on the broker)."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import os
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from connectors import load_sink
from connectors.base.redaction import Redactor
from connectors.base.routing import wrap
from connectors.files import FileSink
from connectors.webhook import WebhookSink
from pipeline.engine.curate import curate
from pipeline.errors import BadDataError, ConfigError, RetryableSinkError
from pipeline.settings import Settings
from pipeline.types import RawLine
from pipeline.wire.records import normalize


def row(i: int, routes: list[str] | None = None, **attrs: str) -> Any:
    rec = normalize(
        {
            "timestamp": 1_790_000_000_000_000 + i,
            "service": "s",
            "level": "WARN",
            "message": f"m{i}",
            "session_id": "x",
            "attributes": attrs,
        }
    )
    r = curate(RawLine(rec, "logs.raw", 0, i), ["baseline"], None, 30)
    r["routes"] = routes or []
    return r


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[Any] = []

    def write_batch(self, rows: Any) -> None:
        self.rows.extend(rows)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_routing_and_redaction_per_sink() -> None:
    redaction = {
        "*": [{"key": "token*", "action": "drop"}],
        "webhook": [{"key": "*email*", "action": "mask"}, {"key": "user_ref", "action": "hash"}],
    }
    store, hook = Recorder("clickhouse"), Recorder("webhook")
    rows = [
        row(1, user_email="a@b.c", token_x="t", user_ref="42"),
        row(2, ["webhook"], user_email="d@e.f", token_y="t", user_ref="42", keep="yes"),
    ]
    settings = Settings(
        redaction=redaction,
        primary_sinks=["clickhouse"],
        redaction_key=SecretStr("k"),
        redaction_defaults=False,
    )
    for target in (store, hook):
        wrap(target, settings).write_batch(rows)
    assert [r["message"] for r in store.rows] == ["m1", "m2"]  # primary: every line
    assert store.rows[0]["attributes"] == {"user_email": "a@b.c", "user_ref": "42"}  # only "*": token dropped
    [sent] = hook.rows  # routed only
    digest = hmac.new(b"k", b"42", hashlib.sha256).hexdigest()[:16]  # keyed: guesses cannot be hashed
    assert sent["attributes"] == {"user_email": "***", "user_ref": f"hmac:{digest}", "keep": "yes"}
    assert rows[1]["attributes"]["user_email"] == "d@e.f"  # the original row is not changed
    with pytest.raises(ConfigError):
        Redactor([{"key": "x", "action": "shred"}])
    with pytest.raises(ConfigError, match="HINDSIGHT_REDACTION_KEY"):
        Redactor([{"key": "x", "action": "hash"}])


SECRETS_IN = {
    "message": (
        "login ok password=hunter2 card 4111 1111 1111 1111 auth Authorization: Bearer eyJhbGciOi.abc.def "
        "aws AKIAIOSFODNN7EXAMPLE gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 api_key: 'q1w2e3'"
    ),
    "attributes": {
        "password": "hunter2",
        "db.Secret": "s3cr3t",
        "x-api-key": "abc",
        "http.request.header.authorization": "Basic dXNlcjpwYXNz",
        "cookie": "sid=1",
        "auth_token": "t0k",
        "note": "retry with token=zzz9 later",
        "order": "4111-1111-1111-1111",
        "order_id": "1234567890123",  # 13 digits failing the Luhn check: not a card, kept
        "user": "u-7",
    },
}
SECRET_VALUES = ("hunter2", "4111 1111 1111 1111", "4111-1111-1111-1111", "eyJhbGciOi",
                 "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "q1w2e3", "s3cr3t",
                 "dXNlcjpwYXNz", "sid=1", "t0k", "zzz9")  # fmt: skip


@pytest.mark.parametrize("sink_name", ["clickhouse", "webhook", "file", "postgres", "redis", "archive"])
def test_the_default_redaction_keeps_each_listed_secret_out_of_every_sink(sink_name: str) -> None:
    target = Recorder(sink_name)
    line = row(7, [sink_name], **SECRETS_IN["attributes"])
    line["message"] = SECRETS_IN["message"]
    wrap(target, Settings(primary_sinks=["clickhouse"])).write_batch([line])
    [got] = target.rows
    text = got["message"] + " " + " ".join(f"{k}={v}" for k, v in got["attributes"].items())
    for secret in SECRET_VALUES:
        assert secret not in text, (secret, text)
    assert "card ***1111" in got["message"] and got["attributes"]["order"] == "***1111"  # last four kept
    assert got["attributes"]["order_id"] == "1234567890123" and got["attributes"]["user"] == "u-7"
    assert "login ok" in got["message"] and "Bearer ***" in got["message"]
    # off for everyone, or for one sink
    for settings in (Settings(redaction_defaults=False), Settings(redaction_defaults_except=[sink_name])):
        plain = Recorder(sink_name)
        wrap(plain, settings.model_copy(update={"primary_sinks": [sink_name]})).write_batch([line])
        assert plain.rows[0]["message"] == SECRETS_IN["message"]


def test_file_sink_rotates_syncs_and_finishes_leftovers(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_bytes=1024, rotate_s=3600)
    for i in range(30):
        sink.write_batch([row(i, pad=os.urandom(150).hex())])  # incompressible
        sink.flush()
    parts = list(tmp_path.glob("*.part"))
    assert len(parts) == 1 and len(sink.finished) >= 2
    # what was flushed is readable even before the file is finished (a crash leaves a valid prefix)
    prefix = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(parts[0].read_bytes())
    assert prefix.endswith(b"\n") and all(orjson.loads(x)["message"] for x in prefix.splitlines())
    FileSink(tmp_path, 1024, 3600)  # a new sink finishes the crash's leftover
    files = sorted(tmp_path.glob("*.jsonl.gz"))
    assert not list(tmp_path.glob("*.part"))
    lines = [orjson.loads(x) for f in files for x in gzip.decompress(f.read_bytes()).splitlines()]
    assert sorted(r["raw_offset"] for r in lines) == list(range(30))
    assert load_sink("file") is FileSink


class Receiver:
    """A customer endpoint: answers with the status in `status` (and `location`), keeps what it
    accepted in `got` and every request it saw, whatever it answered, in `seen`."""

    def __init__(self) -> None:
        self.status = 200
        self.location = ""
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.seen: list[tuple[str, int, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, body: bytes) -> None:
                owner.seen.append((self.command, owner.status, dict(self.headers)))
                if owner.status == 200:
                    owner.got.append((dict(self.headers), body))
                self.send_response(owner.status)
                if owner.location:
                    self.send_header("Location", owner.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self) -> None:
                self._answer(b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


def test_webhook_signs_batches_and_classifies_failures(receiver: Receiver) -> None:
    sink = WebhookSink(receiver.url, b"k3y", timeout_s=2, batch_rows=2)
    sink.write_batch([row(i) for i in range(5)])
    sink.flush()
    assert [len(orjson.loads(b)) for _, b in receiver.got] == [2, 2, 1]
    headers, body = receiver.got[0]
    expected = hmac.new(
        b"k3y", headers["X-Hindsight-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Hindsight-Signature"] == f"sha256={expected}"
    for status, error in ((503, RetryableSinkError), (429, RetryableSinkError), (422, BadDataError)):
        receiver.status = status
        sink.write_batch([row(9)])
        with pytest.raises(error):
            sink.flush()
    receiver.status = 200
    sink.flush()  # nothing left pending after a failure: the runner resubmits the batch itself
    assert len(receiver.got) == 3
    assert [status for _, status, _ in receiver.seen] == [200, 200, 200, 503, 429, 422]
    unreachable = WebhookSink("http://127.0.0.1:9/hook", b"k", timeout_s=1)
    unreachable.write_batch([row(1)])
    with pytest.raises(RetryableSinkError):
        unreachable.flush()
    with pytest.raises(ConfigError):
        WebhookSink.from_settings(Settings())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_webhook_redirects_are_failures_never_followed(status: int) -> None:
    """A redirect would carry the signed batch (or, as a GET, the signature) to another host: it is
    refused, the rows are dead-lettered with the reason, and nothing reaches the other host."""
    hook, elsewhere = Receiver(), Receiver()
    try:
        hook.status, hook.location = status, elsewhere.url
        sink = WebhookSink(hook.url, b"k3y", timeout_s=2)
        sink.write_batch([row(1)])
        with pytest.raises(BadDataError, match=f"redirect.*{status}|{status}.*redirect"):
            sink.flush()
        assert sink.requests == 0 and hook.got == [] and elsewhere.seen == []
        assert [s for _, s, _ in hook.seen] == [status]
    finally:
        hook.httpd.shutdown()
        elsewhere.httpd.shutdown()
