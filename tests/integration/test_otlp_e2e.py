"""OTLP/HTTP receiver on the real broker: the official OpenTelemetry Python SDK's OTLP exporters
(protobuf and JSON) publish through it into logs.raw; bad payloads get OTLP error answers, bad records
go to logs.dlq, and the receiver keeps serving."""

from __future__ import annotations

import gzip
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as ProtoExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from pipeline.api.otlp import OtlpCollector, OtlpServer
from pipeline.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.wire.raw import RawDecoder
from tests.conftest import free_port

from .helpers import consume_all

pytestmark = pytest.mark.integration
TOKEN = "otlp-token"


def receiver_settings(ns: Settings, **more: object) -> Settings:
    """Settings of a receiver with three tokens (all scopes, ingest only, read only), its topics made."""
    settings = ns.model_copy(
        update={
            "api_token": SecretStr(TOKEN),
            "ingest_token": SecretStr("ingest-only"),
            "read_token": SecretStr("read-only"),
            "otlp_port": free_port(),
            **more,
        }
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def receiver(ns: Settings) -> Iterator[tuple[Settings, str, OtlpServer]]:
    settings = receiver_settings(ns)
    server = OtlpServer(settings).start()
    try:
        yield settings, f"http://127.0.0.1:{server.port}/v1/logs", server
    finally:
        server.stop()


def _emit(exporter: Any, service: str, session: str) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"otlp-e2e-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
    logger.debug("step one", extra={"session.id": session, "enduser.id": "u-1", "http.route": "/pay"})
    logger.error("payment failed", extra={"session.id": session, "http.response.status_code": 502})
    assert provider.force_flush(10_000)
    provider.shutdown()


def _raw_records(settings: Settings, expect: int) -> list[dict[str, Any]]:
    decoder = RawDecoder(settings.max_record_bytes)
    out: list[dict[str, Any]] = []
    for msg in consume_all(settings, settings.raw_topic, expect=expect, timeout=20):
        records, errors = decoder.decode(msg.value())
        assert not errors
        out.extend(dict(r) for r in records)
    return out


def test_sdk_exporters_publish_protobuf_and_json(receiver: tuple[Settings, str, OtlpServer]) -> None:
    settings, url, server = receiver
    headers = {"Authorization": f"Bearer {TOKEN}"}
    _emit(ProtoExporter(endpoint=url, headers=headers), "proto-svc", "s-proto")
    _emit(JsonExporter(endpoint=url, headers=headers), "json-svc", "s-json")
    # one request per record (SimpleLogRecordProcessor), in each of the two encodings
    assert server.requests == {"application/x-protobuf": 2, "application/json": 2}
    registry = CollectorRegistry()
    registry.register(OtlpCollector(server))
    exposed = generate_latest(registry).decode()
    assert 'hindsight_otlp_requests_total{content_type="application/json"} 2.0' in exposed
    assert "hindsight_otlp_records_total 4.0" in exposed
    records = _raw_records(settings, expect=2)
    by = {(r["service"], r["message"]): r for r in records}
    assert set(by) == {
        ("proto-svc", "step one"),
        ("proto-svc", "payment failed"),
        ("json-svc", "step one"),
        ("json-svc", "payment failed"),
    }
    for service, session in (("proto-svc", "s-proto"), ("json-svc", "s-json")):
        step, fail = by[(service, "step one")], by[(service, "payment failed")]
        assert step["level"] == "DEBUG" and step["session_id"] == session and step["user_id"] == "u-1"
        assert step["endpoint"] == "/pay"
        assert fail["level"] == "ERROR" and fail["status_code"] == 502 and fail["session_id"] == session


def _post(url: str, body: bytes, ctype: str, token: str = TOKEN, **extra: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": ctype, "Authorization": f"Bearer {token}", **extra},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_bad_payloads_get_otlp_errors_and_bad_records_are_dead_lettered(
    receiver: tuple[Settings, str, OtlpServer],
) -> None:
    settings, url, _ = receiver
    code, body, ctype = _post(url, b"\xff\xff\xff not protobuf", "application/x-protobuf")
    assert code == 400 and ctype == "application/x-protobuf"
    status = Status()
    status.ParseFromString(body)
    assert status.code == 3 and "protobuf" in status.message
    code, body, _ = _post(url, b"{broken", "application/json")
    assert code == 400 and "invalid JSON" in orjson.loads(body)["message"]
    assert _post(url, b"{}", "text/plain")[0] == 415
    assert _post(url, b"{}", "application/json", token="wrong")[0] == 401
    assert _post(url, b"{}", "application/json", token="read-only")[0] == 403  # a read token sends nothing
    assert _post(url, b"{}", "application/json", token="ingest-only")[0] == 200
    assert _post(url.replace("/v1/logs", "/v1/traces"), b"{}", "application/json")[0] == 404
    bomb = gzip.compress(b"\x00" * (settings.otlp_max_body_bytes + 10))
    code, body, _ = _post(url, bomb, "application/json", **{"Content-Encoding": "gzip"})
    assert code == 400 and "larger than" in orjson.loads(body)["message"]

    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "mixed"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"severityText": "WARN", "body": {"stringValue": "kept"}},
                            {
                                "body": {"stringValue": "bad latency"},
                                "attributes": [{"key": "latency_ms", "value": {"stringValue": "fast"}}],
                            },
                        ]
                    }
                ],
            }
        ]
    }
    code, body, ctype = _post(
        url, gzip.compress(orjson.dumps(doc)), "application/json", **{"Content-Encoding": "gzip"}
    )
    assert code == 200 and ctype == "application/json"
    answer = orjson.loads(body)
    assert answer["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "latency_ms" in answer["partialSuccess"]["errorMessage"]
    # protobuf answer of a clean request: an empty ExportLogsServiceResponse
    code, body, _ = _post(url, b"", "application/x-protobuf")
    assert code == 200
    ExportLogsServiceResponse().ParseFromString(body)

    assert [r["message"] for r in _raw_records(settings, expect=1)] == ["kept"]
    [dead] = consume_all(settings, settings.dlq_topic, expect=1)
    headers = dict(dead.headers() or [])
    assert headers["hindsight.stage"] == b"otlp" and headers["hindsight.error_type"] == b"wrong_type"
    assert b"latency_ms" in headers["hindsight.reason"] and b"bad latency" in (dead.value() or b"")
