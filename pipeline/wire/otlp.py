"""OTLP logs -> log records: decode an ExportLogsServiceRequest (protobuf or OTLP/JSON) and map each
LogRecord to our record, following the OpenTelemetry semantic conventions.

Mapping: resource `service.name` -> service; severity text (else number) -> level; body -> message;
trace/span ids -> lowercase hex; `session.id`, `enduser.id`, `http.route`, `transaction.id`,
`http.response.status_code` (or `http.status_code`), `hindsight.latency_ms` (or `latency_ms`), and
`security.flags` -> their fields; every other log attribute -> attributes, other resource attributes ->
attributes prefixed `resource.`, the scope's name and version -> `otel.scope.name` / `otel.scope.version`
and the trace flags -> `otel.trace_flags` (the ClickHouse sink puts these in the otel_logs columns
ResourceAttributes, ScopeName, ScopeVersion, TraceFlags). No Kafka here: the receivers publish it.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.errors import DecodeError
from pipeline.types import Level, LogRecord
from pipeline.wire.records import normalize

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_FIELDS = {
    "session.id": "session_id",
    "enduser.id": "user_id",
    "http.route": "endpoint",
    "transaction.id": "transaction_id",
}
_STATUS = ("http.response.status_code", "http.status_code")
_LATENCY = ("hindsight.latency_ms", "latency_ms")
_FLAGS = "security.flags"


class OtlpError(ValueError):
    """The payload as a whole is unusable (the endpoint answers 400 with this message)."""


@dataclass
class Mapped:
    """What one request yields: the records to publish and the rejected ones with their reasons."""

    records: list[LogRecord] = field(default_factory=list)
    rejected: list[tuple[str, str, bytes]] = field(default_factory=list)  # error_type, reason, payload
    positions: list[int] = field(default_factory=list)  # each record's ordinal among the request's records
    rejected_at: list[int] = field(default_factory=list)  # each rejection's ordinal


def parse_request(body: bytes, content_type: str) -> ExportLogsServiceRequest:
    """Protobuf or OTLP/JSON (hex trace/span ids, camelCase or snake_case names, unknown fields ignored)."""
    request = ExportLogsServiceRequest()
    if content_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
            raise OtlpError(f"not an OTLP protobuf ExportLogsServiceRequest: {exc}") from None
        return request
    if content_type == JSON:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise OtlpError(f"invalid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise OtlpError("an OTLP/JSON request is a JSON object")
        try:
            _ids_hex_to_base64(doc)
            json_format.ParseDict(doc, request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise OtlpError(f"not an OTLP/JSON ExportLogsServiceRequest: {str(exc)[:300]}") from None
        return request
    raise OtlpError(f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}")


def _ids_hex_to_base64(doc: dict[str, Any]) -> None:
    """OTLP/JSON writes traceId/spanId as hex, where protobuf's JSON mapping expects base64."""
    for rl in _list(doc, "resourceLogs", "resource_logs"):
        for sl in _list(rl, "scopeLogs", "scope_logs"):
            for rec in _list(sl, "logRecords", "log_records"):
                if not isinstance(rec, dict):
                    continue
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    value = rec.get(key)
                    if isinstance(value, str) and value:
                        try:
                            rec[key] = base64.b64encode(bytes.fromhex(value)).decode()
                        except ValueError:
                            raise OtlpError(f"{key} must be hex, got {value[:64]!r}") from None


def _list(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def any_value(value: AnyValue) -> Any:
    """An AnyValue as plain Python (bytes as base64, kvlists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def _level(text: str, number: int) -> str:
    if text:
        try:
            return Level.parse(text).name
        except ValueError:
            pass  # a custom text: the number decides
    if number <= 0:
        return "INFO"  # SEVERITY_NUMBER_UNSPECIFIED: the data model leaves it to the receiver
    for level in reversed(Level):
        if number >= level.value:
            return level.name
    return "TRACE"


def map_request(request: ExportLogsServiceRequest, now_us: int | None = None) -> Mapped:
    """Every LogRecord of the request as our record; unusable ones rejected with a reason."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    out = Mapped()
    ordinal = 0
    for rl in request.resource_logs:
        resource = _attrs(rl.resource.attributes)
        service = _text(resource.pop("service.name", None) or "unknown_service")
        resource_attrs = {f"resource.{k}": _text(v) for k, v in resource.items() if v is not None}
        for sl in rl.scope_logs:
            scope = dict(resource_attrs)
            if sl.scope.name:
                scope["otel.scope.name"] = sl.scope.name
            if sl.scope.version:
                scope["otel.scope.version"] = sl.scope.version
            for rec in sl.log_records:
                try:
                    out.records.append(_map_record(rec, service, scope, now_us))
                    out.positions.append(ordinal)
                except DecodeError as exc:
                    out.rejected.append((exc.error_type, exc.detail, rec.SerializeToString()))
                    out.rejected_at.append(ordinal)
                ordinal += 1
    return out


def _map_record(rec: Any, service: str, resource_attrs: dict[str, str], now_us: int) -> LogRecord:
    attrs = _attrs(rec.attributes)
    line: dict[str, Any] = {
        "timestamp": (rec.time_unix_nano or rec.observed_time_unix_nano) // 1000 or now_us,
        "service": service,
        "level": _level(rec.severity_text, rec.severity_number),
        "severity_number": rec.severity_number if 0 < rec.severity_number <= 24 else 0,
        "message": _text(any_value(rec.body)) if rec.HasField("body") else "",
    }
    if rec.observed_time_unix_nano:
        line["observed_timestamp"] = rec.observed_time_unix_nano // 1000
    if rec.trace_id:
        line["trace_id"] = rec.trace_id.hex()
    if rec.span_id:
        line["span_id"] = rec.span_id.hex()
    if rec.flags & 0xFF:  # W3C trace flags, the low byte of LogRecord.flags
        attrs["otel.trace_flags"] = str(rec.flags & 0xFF)
    for key, name in _FIELDS.items():
        value = attrs.pop(key, None)
        if value is not None:
            line[name] = _text(value)
    for key in _STATUS:
        value = attrs.pop(key, None)
        if value is not None and "status_code" not in line:
            line["status_code"] = _int(value, key)
    for key in _LATENCY:
        value = attrs.pop(key, None)
        if value is not None and "latency_ms" not in line:
            line["latency_ms"] = _number(value, key)
    flags = attrs.pop(_FLAGS, None)
    if flags is not None:
        line["security_flags"] = [_text(f) for f in (flags if isinstance(flags, list) else [flags])]
    line["attributes"] = {**resource_attrs, **{k: _text(v) for k, v in attrs.items() if v is not None}}
    return normalize(line, now_us)


def _int(value: Any, key: str) -> int:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise DecodeError("wrong_type", f"attribute {key} must be an integer, got {value!r:.80}")


def _number(value: Any, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DecodeError("wrong_type", f"attribute {key} must be a number, got {value!r:.80}") from None
