"""OTLP/HTTP logs receiver: POST /v1/logs (protobuf or JSON, gzip allowed) -> logs.raw (gRPC: otlp_grpc).

Answers as the OTLP spec asks: 200 with an ExportLogsServiceResponse (partial_success counts the
records that were dead-lettered, with the first reason); errors as a google.rpc.Status in the
request's encoding: 400 for a payload that does not decode, 415 for another content type, 413 when
too large, 503 (Retry-After) when Kafka did not confirm delivery, so exporters retry. A 200 is sent
only after the producer flushed.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Producer
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from pipeline.api.base import Api, ApiError, Call, Endpoint, Limits, Ok, Server, Tokens
from pipeline.errors import ConfigError
from pipeline.kafka import producer_config
from pipeline.metrics import counter, labelled
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.wire.deadletter import Rejected, dlq_headers
from pipeline.wire.otlp import JSON, PROTOBUF, OtlpError, map_request, parse_request

log = logging.getLogger(__name__)

PATH = "/v1/logs"
_INVALID_ARGUMENT, _UNAVAILABLE = 3, 14  # google.rpc.Code


class OtlpServer(Server):
    """The receiver in a thread; publishes through one batching Publisher."""

    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        if not Tokens.from_settings(settings):
            raise ConfigError(
                "the OTLP receiver needs a token: set HINDSIGHT_INGEST_TOKEN (it may only send logs) or "
                "HINDSIGHT_API_TOKEN; exporters send it as "
                "OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer <token>'"
            )
        self.settings = settings
        self.publisher = publisher or Publisher(settings)
        self.dlq = Producer(producer_config(settings))
        self.flush_lock = threading.Lock()
        self.accepted = 0
        self.rejected = 0
        self.requests: dict[str, int] = {}  # by content type
        limits = Limits.from_settings(settings, settings.otlp_max_body_bytes)
        api = Api(
            "log-hindsight OTLP/HTTP logs receiver",
            [
                Endpoint(
                    "POST", PATH, self._post, "Export logs (OTLP/HTTP, protobuf or JSON)",
                    Ok(200, "ExportLogsServiceResponse", PROTOBUF, {"type": "string"}),
                    errors=(400, 413, 415, 503), raw_query=True, scope="ingest",
                )
            ],
            Tokens.from_settings(settings),
            limits,
            error_response=_status_response,
        )  # fmt: skip
        super().__init__("OTLP receiver", api.app(), settings.otlp_host, settings.otlp_port,
                         "HINDSIGHT_OTLP_PORT", limits)  # fmt: skip

    def start(self) -> OtlpServer:
        self.publisher.partition_count()  # fail now, not on the first request, if logs.raw is missing
        return super().start()

    def stop(self) -> None:
        super().stop()
        self.publisher.flush(10)
        self.dlq.flush(10)

    def _post(self, call: Call) -> Response:
        ctype = _content_type(call.request)
        if ctype not in (JSON, PROTOBUF):
            raise ApiError(415, [("(content-type)", f"use {PROTOBUF} or {JSON}")])
        body = _inflate(
            call.body, call.request.headers.get("content-encoding"), self.settings.otlp_max_body_bytes
        )
        try:
            rejected, reason = self.export(body, ctype)
        except OtlpError as exc:
            log.warning("otlp request refused reason=%s", str(exc)[:300])
            raise ApiError(400, [("(body)", str(exc))]) from None
        except ConnectionError as exc:
            log.warning("otlp publish not confirmed error=%s", exc)
            raise ApiError(
                503, [("(kafka)", f"Kafka did not confirm: {exc}")], {"Retry-After": "2"}
            ) from None
        response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = reason[:1000]
        if ctype == JSON:
            return Response(json_format.MessageToJson(response, indent=None).encode(), 200, media_type=JSON)
        return Response(response.SerializeToString(), 200, media_type=PROTOBUF)

    def export(self, body: bytes, content_type: str, via: str | None = None) -> tuple[int, str]:
        """Publish one request's records; returns (rejected count, first reason). Raises OtlpError.
        `via` labels the request in the metrics instead of its content type (the gRPC receiver)."""
        label = via or content_type
        self.requests[label] = self.requests.get(label, 0) + 1
        mapped = map_request(parse_request(body, content_type))
        for record in mapped.records:
            self.publisher.publish(record)
        for error_type, reason, payload in mapped.rejected:
            rejected = Rejected(error_type, reason, "otlp", payload)
            headers: Any = dlq_headers(rejected, PATH, 0, 0)
            self.dlq.produce(self.settings.dlq_topic, value=payload, headers=headers)
        with self.flush_lock:
            failed_before = self.publisher.metrics.failed
            undelivered = self.publisher.flush(self.settings.request_timeout_s) + self.dlq.flush(
                self.settings.request_timeout_s
            )
            if undelivered or self.publisher.metrics.failed > failed_before:
                raise ConnectionError(self.publisher.metrics.last_error or f"{undelivered} not delivered")
        self.accepted += len(mapped.records)
        self.rejected += len(mapped.rejected)
        first = mapped.rejected[0] if mapped.rejected else None
        return len(mapped.rejected), (f"{first[0]}: {first[1]}" if first else "")


def _content_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def _inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding (gzip or none), refused beyond `limit` bytes inflated."""
    encoding = (encoding or "identity").lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise ApiError(400, [("(body)", f"unsupported Content-Encoding {encoding!r}: use gzip or none")])
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, [("(body)", f"bad gzip body: {exc}")]) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ApiError(400, [("(body)", f"decompressed body larger than {limit} bytes")])
    return out


def _status_response(exc: ApiError, request: Request) -> Response:
    """Every error as a google.rpc.Status, in the request's encoding (JSON or protobuf)."""
    code = _UNAVAILABLE if exc.status == 503 else _INVALID_ARGUMENT
    status = Status(code=code, message="; ".join(msg for _, msg in exc.problems))
    headers = dict(exc.headers)
    if _content_type(request) == JSON:
        return Response(json_format.MessageToJson(status, indent=None).encode(), exc.status, headers, JSON)
    return Response(status.SerializeToString(), exc.status, headers, PROTOBUF)


class OtlpCollector(Collector):
    """The OTLP receiver: requests by content type, records accepted and dead-lettered."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield labelled(
            "hindsight_otlp_requests",
            "OTLP export requests by content type (grpc for OTLP/gRPC)",
            "content_type",
            self.server.requests,
        )
        yield counter("hindsight_otlp_records", "Log records published to logs.raw", self.server.accepted)
        yield counter("hindsight_otlp_rejected_records", "Log records dead-lettered", self.server.rejected)
