"""OTLP/gRPC receiver on the real broker: the OpenTelemetry SDK's gRPC exporter publishes through it
into logs.raw with the same mapping as OTLP/HTTP; tokens, bad payloads, dead letters, partial success
and Kafka outages answer with the gRPC status codes exporters act on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb

from pipeline.api.otlp import OtlpServer
from pipeline.api.otlp_grpc import OtlpGrpcServer
from pipeline.settings import Settings
from tests.conftest import free_port

from .helpers import consume_all
from .test_otlp_e2e import TOKEN, _emit, _raw_records, receiver_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver(ns: Settings) -> Iterator[tuple[Settings, str, OtlpServer]]:
    settings = receiver_settings(ns, otlp_grpc_port=free_port(), otlp_max_body_bytes=65_536)
    http = OtlpServer(settings)
    server = OtlpGrpcServer(settings, http).start()
    http.start()  # both, as `hindsight otlp` runs them
    try:
        yield settings, f"127.0.0.1:{server.port}", http
    finally:
        server.stop()
        http.stop()


def export(address: str, request: ExportLogsServiceRequest | bytes, token: str = TOKEN, **kw: Any) -> Any:
    """One raw LogsService/Export call; the response or the grpc.RpcError."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request_serializer=lambda r: r if isinstance(r, bytes) else r.SerializeToString(),
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        try:
            return call(request, metadata=[("authorization", f"Bearer {token}")], timeout=20, **kw)
        except grpc.RpcError as exc:
            return exc


def record(message: str, level: str = "INFO", **attrs: Any) -> LogRecord:
    rec = LogRecord(severity_text=level, body=AnyValue(string_value=message))
    for key, value in attrs.items():
        rec.attributes.append(
            KeyValue(key=key, value=AnyValue(string_value=value))
            if isinstance(value, str)
            else KeyValue(key=key, value=AnyValue(int_value=value))
        )
    return rec


def request_of(service: str, *records: LogRecord) -> ExportLogsServiceRequest:
    resource = ResourcePb(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


def test_sdk_grpc_exporter_publishes_like_http(receiver: tuple[Settings, str, OtlpServer]) -> None:
    settings, address, http = receiver
    exporter = GrpcExporter(
        endpoint=f"http://{address}", insecure=True, headers={"authorization": f"Bearer {TOKEN}"}
    )
    _emit(exporter, "grpc-svc", "s-grpc")
    gzipped = GrpcExporter(
        endpoint=f"http://{address}",
        insecure=True,
        headers={"authorization": "Bearer ingest-only"},  # the token a shipper gets
        compression=grpc.Compression.Gzip,  # type: ignore[arg-type]
    )
    _emit(gzipped, "grpc-gzip", "s-gzip")
    assert http.requests == {"grpc": 4} and http.accepted == 4  # one call per record
    by = {(r["service"], r["message"]): r for r in _raw_records(settings, expect=4)}
    assert set(by) == {(s, m) for s in ("grpc-svc", "grpc-gzip") for m in ("step one", "payment failed")}
    step, fail = by[("grpc-svc", "step one")], by[("grpc-svc", "payment failed")]
    assert step["level"] == "DEBUG" and step["session_id"] == "s-grpc" and step["user_id"] == "u-1"
    assert step["endpoint"] == "/pay"
    assert fail["level"] == "ERROR" and fail["status_code"] == 502


def test_grpc_errors_partial_success_and_dead_letters(receiver: tuple[Settings, str, OtlpServer]) -> None:
    settings, address, _ = receiver
    ok = request_of("g", record("fine"))
    assert export(address, ok, token="wrong").code() == grpc.StatusCode.UNAUTHENTICATED
    assert export(address, ok, token="read-only").code() == grpc.StatusCode.PERMISSION_DENIED
    bad = export(address, b"\xff\xff\xff not protobuf")
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "protobuf" in bad.details()
    huge = request_of("g", record("x" * 70_000))
    assert export(address, huge).code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # beyond otlp_max_body_bytes

    mixed = request_of("mixed", record("kept", "WARN"), record("bad latency", latency_ms="fast"))
    answer = export(address, mixed)
    assert isinstance(answer, ExportLogsServiceResponse), answer
    assert answer.partial_success.rejected_log_records == 1
    assert "latency_ms" in answer.partial_success.error_message
    clean = export(address, ok)
    assert isinstance(clean, ExportLogsServiceResponse) and not clean.HasField("partial_success")
    assert sorted(r["message"] for r in _raw_records(settings, expect=2)) == ["fine", "kept"]
    [dead] = consume_all(settings, settings.dlq_topic, expect=1)
    headers = dict(dead.headers() or [])
    assert headers["hindsight.stage"] == b"otlp" and headers["hindsight.error_type"] == b"wrong_type"


def test_grpc_answers_unavailable_when_kafka_does_not_confirm(
    receiver: tuple[Settings, str, OtlpServer],
) -> None:
    """Exporters retry UNAVAILABLE: the receiver says it when delivery is not confirmed."""
    _, address, http = receiver

    def unconfirmed(timeout: float | None = None) -> int:
        return 1  # one record still undelivered when the wait ended

    http.publisher.flush = unconfirmed  # type: ignore[method-assign]
    answer = export(address, request_of("g", record("not confirmed")))
    assert answer.code() == grpc.StatusCode.UNAVAILABLE and "Kafka did not confirm" in answer.details()
