"""OTLP -> records: payloads made by the official OpenTelemetry Python SDK (its own encoder), OTLP/JSON
with hex ids, severity mapping, bad attribute values rejected per record, broken payloads refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from pipeline.wire.otlp import JSON, PROTOBUF, OtlpError, map_request, parse_request


@pytest.fixture
def sdk() -> Iterator[tuple[logging.Logger, InMemoryLogRecordExporter, TracerProvider]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "prod"})
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"otlp-unit-{id(exporter)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger.addHandler(handler)
    yield logger, exporter, TracerProvider()
    logger.removeHandler(handler)
    provider.shutdown()


def _request_bytes(exporter: InMemoryLogRecordExporter) -> bytes:
    return encode_logs(exporter.get_finished_logs()).SerializeToString()


def test_sdk_protobuf_maps_every_field(sdk: Any) -> None:
    logger, exporter, tracer_provider = sdk
    tracer = tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("pay") as span:
        logger.error(
            "card declined",
            extra={
                "session.id": "s-1",
                "enduser.id": "u-7",
                "http.route": "/pay",
                "http.response.status_code": 502,
                "hindsight.latency_ms": 812.5,
                "security.flags": ("card_testing",),
                "tenant": "acme",
            },
        )
        ctx = span.get_span_context()
    logger.debug("cart loaded", extra={"session.id": "s-1"})
    mapped = map_request(parse_request(_request_bytes(exporter), PROTOBUF))
    assert mapped.rejected == []
    err, dbg = mapped.records
    assert err["service"] == "checkout" and err["level"] == "ERROR" and err["message"] == "card declined"
    assert (err["session_id"], err["user_id"], err["endpoint"]) == ("s-1", "u-7", "/pay")
    assert err["status_code"] == 502 and err["latency_ms"] == 812.5
    assert err["security_flags"] == ["card_testing"]
    assert err["trace_id"] == format(ctx.trace_id, "032x") and err["span_id"] == format(ctx.span_id, "016x")
    assert err["attributes"]["tenant"] == "acme"
    assert err["attributes"]["resource.deployment.environment"] == "prod"
    assert "session.id" not in err["attributes"] and "service.name" not in str(err["attributes"])
    assert err["timestamp"] > 1_700_000_000_000_000  # microseconds
    assert dbg["level"] == "DEBUG" and dbg["session_id"] == "s-1" and dbg.get("trace_id") in (None, "")
    # the scope (the SDK names it after the Python logger) and the sampled flag of the span
    assert err["attributes"]["otel.scope.name"] == logger.name == dbg["attributes"]["otel.scope.name"]
    assert err["attributes"]["otel.trace_flags"] == str(int(ctx.trace_flags))  # sampled (and random)
    assert int(ctx.trace_flags) & 1 and "otel.trace_flags" not in dbg["attributes"]


def test_otlp_json_with_hex_ids_and_severity_numbers() -> None:
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1790000000123456789",
                                "severityNumber": 18,
                                "body": {
                                    "kvlistValue": {"values": [{"key": "k", "value": {"intValue": "3"}}]}
                                },
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "attributes": [
                                    {"key": "session.id", "value": {"stringValue": "s-9"}},
                                    {"key": "http.status_code", "value": {"intValue": "504"}},
                                ],
                                "futureField": {"ignored": True},
                            },
                            {"severityText": "warning", "body": {"stringValue": "slow"}},
                            {"severityNumber": 3, "body": {"stringValue": "trace-ish"}},
                        ]
                    }
                ],
            }
        ]
    }
    mapped = map_request(parse_request(orjson.dumps(doc), JSON), now_us=1_790_000_000_000_000)
    first, second, third = mapped.records
    assert first["timestamp"] == 1790000000123456 and first["level"] == "ERROR"
    assert first["trace_id"] == "5b8efff798038103d269b633813fc60c" and first["span_id"] == "eee19b7ec3c1b174"
    assert orjson.loads(first["message"]) == {"k": 3} and first["status_code"] == 504
    assert (
        second["level"] == "WARN"
        and second["timestamp"] == 1_790_000_000_000_000
        and second["service"] == "api"
    )
    assert third["level"] == "TRACE"


def test_bad_records_rejected_one_by_one_and_bad_payloads_refused() -> None:
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"body": {"stringValue": "ok"}},
                            {
                                "body": {"stringValue": "bad status"},
                                "attributes": [{"key": "http.status_code", "value": {"stringValue": "abc"}}],
                            },
                        ]
                    }
                ]
            }
        ]
    }
    mapped = map_request(parse_request(orjson.dumps(doc), JSON))
    assert [r["message"] for r in mapped.records] == ["ok"]
    assert mapped.records[0]["service"] == "unknown_service"
    [(error_type, reason, payload)] = mapped.rejected
    assert error_type == "wrong_type" and "http.status_code" in reason and b"bad status" in payload
    for body, ctype in (
        (b"\xff\xff\xff garbage", PROTOBUF),
        (b"{not json", JSON),
        (b"[1, 2]", JSON),
        (orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}), JSON),
        (orjson.dumps({"resourceLogs": "nope"}), JSON),
        (b"{}", "text/plain"),
    ):
        with pytest.raises(OtlpError):
            parse_request(body, ctype)
    # JSON and protobuf of the same request map identically
    request = parse_request(orjson.dumps(doc), JSON)
    again = parse_request(json_format.MessageToJson(request).encode(), JSON)
    assert (
        map_request(again, 1_790_000_000_000_000).records
        == map_request(request, 1_790_000_000_000_000).records
    )
