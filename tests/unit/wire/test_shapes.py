"""Every shape a shipper or logging library publishes, decoded by the raw decoder into the record
the pipeline expects; malformed variants refused with a reason, their neighbours kept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OtlpRecord
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from pipeline.wire.raw import RawDecoder
from pipeline.wire.shapes import FieldMap

T_S = 1_764_496_800  # 2025-11-30T10:00:00Z
T_US = T_S * 1_000_000
KAFKA_TS_US = (T_S + 7) * 1_000_000

APP_LINE = {
    "level": "error",
    "msg": "payment declined",
    "session_id": "s-1",
    "service": "pay",
    "user_id": "u-1",
}

# fmt: off
# What each shipper's documented Kafka output writes for one application line.
SHAPES: dict[str, dict[str, Any]] = {
    # Fluent Bit: tail + kubernetes filter -> kafka output (Format json, Timestamp_Key @timestamp, double)
    "fluent_bit": {
        "@timestamp": T_S + 0.25,
        "log": orjson.dumps(APP_LINE).decode() + "\n",
        "stream": "stderr",
        "kubernetes": {"pod_name": "pay-7d9f", "namespace_name": "prod", "labels": {"app": "pay"},
                       "container_name": "pay", "host": "node-1"},
    },
    # Vector: kubernetes_logs source -> kafka sink (encoding.codec = "json")
    "vector_kubernetes": {
        "file": "/var/log/pods/prod_pay-7d9f/pay/0.log",
        "kubernetes": {"container_name": "pay", "pod_labels": {"app": "pay"}, "pod_name": "pay-7d9f",
                       "pod_namespace": "prod", "pod_node_name": "node-1"},
        "message": orjson.dumps({**APP_LINE, "ts": T_S + 0.25}).decode(),
        "source_type": "kubernetes_logs",
        "stream": "stderr",
        "timestamp": "2025-11-30T10:00:00.250000000Z",
    },
    # Elastic Common Schema (ecs-logging libraries), flat dotted keys
    "ecs": {
        "@timestamp": "2025-11-30T10:00:00.250Z", "log.level": "error", "message": "payment declined",
        "service.name": "pay", "ecs.version": "1.6.0", "session_id": "s-1", "user.id": "u-1",
        "event.duration": 1_500_000_000,
    },
    # structlog's JSONRenderer with TimeStamper(fmt="iso")
    "structlog": {"event": "payment declined", "level": "error", "timestamp": "2025-11-30T10:00:00.250000Z",
                  "service": "pay", "session_id": "s-1", "user_id": "u-1"},
    # pino: numeric levels, epoch-ms time
    "pino": {"level": 50, "time": T_S * 1000 + 250, "pid": 7, "hostname": "h", "msg": "payment declined",
             "service": "pay", "session_id": "s-1", "user_id": "u-1"},
    # python-json-logger: JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(created)f")
    "python_json_logger": {"asctime": "2025-11-30 10:00:00,250", "levelname": "ERROR", "name": "pay.api",
                           "message": "payment declined", "created": T_S + 0.25, "service": "pay",
                           "session_id": "s-1", "user_id": "u-1"},
    # loguru: logger.add(sink, serialize=True), context bound with logger.bind(...)
    "loguru": {
        "text": "2025-11-30 10:00:00.250 | ERROR | pay.api:charge:42 - payment declined\n",
        "record": {
            "elapsed": {"repr": "0:00:01", "seconds": 1.0}, "exception": None,
            "extra": {"service": "pay", "session_id": "s-1", "user_id": "u-1"},
            "file": {"name": "api.py", "path": "/app/pay/api.py"}, "function": "charge",
            "level": {"icon": "x", "name": "ERROR", "no": 40}, "line": 42, "message": "payment declined",
            "module": "api", "name": "pay.api", "process": {"id": 1, "name": "MainProcess"},
            "thread": {"id": 2, "name": "MainThread"},
            "time": {"repr": "2025-11-30 10:00:00.250000+00:00", "timestamp": T_S + 0.25},
        },
    },
}
# fmt: on


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_decodes_to_the_same_line(shape: str) -> None:
    decoder = RawDecoder(1 << 20)
    [rec], errors = decoder.decode(orjson.dumps(SHAPES[shape]), KAFKA_TS_US)
    assert errors == []
    assert (rec["service"], rec["level"], rec["message"], rec["session_id"]) == (
        "pay",
        "ERROR",
        "payment declined",
        "s-1",
    )
    assert rec["timestamp"] == T_US + 250_000, shape  # the line's own time, not the Kafka record's
    assert decoder.shapes == {shape: 1} and rec["user_id"] == "u-1"


def test_shipper_metadata_becomes_attributes_and_names_the_service() -> None:
    line = {**SHAPES["vector_kubernetes"], "message": "plain text, not JSON"}
    [rec], _ = RawDecoder(1 << 20, field_map=FieldMap(defaults={"level": "INFO"})).decode(orjson.dumps(line))
    assert rec["service"] == "pay" and rec["message"] == "plain text, not JSON" and rec["level"] == "INFO"
    attrs = rec["attributes"]
    assert attrs["k8s.pod.name"] == "pay-7d9f" and attrs["k8s.namespace.name"] == "prod"
    ecs = RawDecoder(1 << 20).decode(orjson.dumps(SHAPES["ecs"]))[0][0]
    assert ecs["latency_ms"] == 1500.0  # event.duration is in nanoseconds


def test_a_line_without_time_takes_the_kafka_records_time() -> None:
    value = orjson.dumps({"service": "legacy", "level": "INFO", "message": "no time here", "session_id": "s"})
    decoder = RawDecoder(1 << 20)
    first = decoder.decode(value, KAFKA_TS_US)[0][0]
    again = decoder.decode(value, KAFKA_TS_US)[0][0]
    assert first["timestamp"] == again["timestamp"] == KAFKA_TS_US == first["observed_timestamp"]


def test_the_deployments_field_map_renames_and_fills() -> None:
    fmap = FieldMap(
        renames={"kubernetes.labels.team": "service", "ctx.sid": "session_id"}, defaults={"level": "WARN"}
    )
    line = {"message": "m", "kubernetes": {"labels": {"team": "billing"}}, "ctx": {"sid": "s-9"}}
    [rec], errors = RawDecoder(1 << 20, field_map=fmap).decode(orjson.dumps(line), KAFKA_TS_US)
    assert errors == [] and (rec["service"], rec["session_id"], rec["level"]) == ("billing", "s-9", "WARN")


def test_newline_delimited_json_in_one_message_keeps_good_lines() -> None:
    lines = [orjson.dumps({**SHAPES["structlog"], "event": f"e{i}"}) for i in range(3)]
    value = lines[0] + b"\n" + b"{not json\n" + lines[1] + b"\n" + lines[2] + b"\n"
    records, errors = RawDecoder(1 << 20).decode(value, KAFKA_TS_US)
    assert [r["message"] for r in records] == ["e0", "e1", "e2"]
    [(index, error)] = errors
    assert index == 1 and error.error_type == "not_json" and error.payload == b"{not json"


def _otlp(*bodies: str, service: str = "pay") -> ExportLogsServiceRequest:
    records = [
        OtlpRecord(
            time_unix_nano=T_US * 1000,
            severity_text="ERROR",
            severity_number=17,
            body=AnyValue(string_value=b),
            attributes=[KeyValue(key="session.id", value=AnyValue(string_value="s-1"))],
        )
        for b in bodies
    ]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


def test_the_collectors_kafka_exporter_otlp_proto_and_json() -> None:
    from google.protobuf import json_format

    request = _otlp("a", "b")
    decoder = RawDecoder(1 << 20)
    records, errors = decoder.decode(request.SerializeToString(), KAFKA_TS_US)
    assert errors == [] and [(r["message"], r["service"], r["session_id"]) for r in records] == [
        ("a", "pay", "s-1"),
        ("b", "pay", "s-1"),
    ]
    as_json = json_format.MessageToJson(request).encode()
    records, errors = decoder.decode(as_json, KAFKA_TS_US)
    assert errors == [] and [r["message"] for r in records] == ["a", "b"]
    assert decoder.shapes == {"otlp_proto": 2, "otlp_json": 2}


# fmt: off
MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "fluent_bit": ({"@timestamp": "yesterday", "log": '{"service": "pay", "level": "info", "msg": "m"}'},
                   "wrong_type"),
    "vector_kubernetes": ({**SHAPES["vector_kubernetes"], "message": 42}, "wrong_type"),
    "ecs": ({"@timestamp": "2025-11-30T10:00:00Z", "log.level": "LOUD", "message": "m", "service.name": "s"},
            "wrong_type"),
    "structlog": ({"event": "e", "level": "info"}, "missing_field"),
    "pino": ({"level": 30, "time": T_S * 1000, "msg": "m"}, "missing_field"),
    "python_json_logger": ({"levelname": "INFO", "name": "n", "service": "s"}, "missing_field"),
    "loguru": ({"text": "t", "record": {"message": "m", "level": {"name": "INFO"}, "extra": {},
                "time": {"timestamp": T_S}}}, "missing_field"),
}
# fmt: on


@pytest.mark.parametrize("shape", sorted(MALFORMED))
def test_malformed_variants_are_refused_with_a_reason_and_spare_their_neighbours(shape: str) -> None:
    bad, error_type = MALFORMED[shape]
    batch = orjson.dumps([SHAPES[shape], bad, SHAPES[shape]])
    records, errors = RawDecoder(1 << 20).decode(batch, KAFKA_TS_US)
    assert len(records) == 2 and all(r["message"] == "payment declined" for r in records)
    [(index, error)] = errors
    assert index == 1 and error.error_type == error_type, error


def test_iso_times_convert_to_the_exact_microsecond() -> None:
    from pipeline.wire.records import to_micros

    # through a float of seconds, about 1 in 85 microsecond times came out one microsecond early
    assert to_micros("2004-08-18T21:38:28.398913+00:00") == 1_092_865_108_398_913
    assert to_micros("2040-02-17T09:48:42.249860Z") == 2_213_084_922_249_860


def test_a_line_without_a_time_takes_the_records_time_on_every_path() -> None:
    """Ingest, replay scans and the archive pass the Kafka record's timestamp: a line that carries no
    time gets the same one on every read, so it keeps one identity in the store."""
    from pipeline.wire.raw import RawDecoder, Where

    value = b'{"service":"s","level":"INFO","message":"no time","session_id":"a"}'
    record_us = 1_790_000_000_123_000
    decoder = RawDecoder(1 << 20)
    [rec], _ = decoder.decode(value, record_us)
    assert rec["timestamp"] == record_us
    kept, positions, lines = decoder.decode_where(
        value, Where(record_us - 1, record_us + 1, (("session_id", "a"),)), record_us
    )
    assert [r["timestamp"] for r in kept] == [record_us] and positions == [0] and lines == 1
    canonical = b'{"timestamp":1790000000000001,"service":"s","level":"INFO","message":"m","session_id":"a"}'
    kept, _, _ = decoder.decode_where(canonical, Where(0, 2**62, ()), record_us)
    assert kept[0]["observed_timestamp"] == record_us  # a line's own time wins; observed is the record's
