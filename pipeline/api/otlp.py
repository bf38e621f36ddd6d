"""OTLP/HTTP logs receiver: POST /v1/logs (protobuf or JSON, gzip allowed) -> logs.raw.

Answers as the OTLP spec asks: 200 with an ExportLogsServiceResponse (partial_success counts the
records that were dead-lettered, with the first reason), 400 with a google.rpc.Status for a payload
that does not decode, 415 for another content type, 413 when too large, 503 (Retry-After) when Kafka
did not confirm delivery, so exporters retry. A 200 is sent only after the producer flushed.
"""

from __future__ import annotations

import hmac
import logging
import threading
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from confluent_kafka import Producer
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from pipeline.api.serve import bind
from pipeline.errors import ConfigError
from pipeline.kafka import producer_config
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.types import Rejected
from pipeline.wire.otlp import JSON, PROTOBUF, OtlpError, map_request, parse_request
from pipeline.worker.processor import dlq_headers

log = logging.getLogger(__name__)

PATH = "/v1/logs"
_INVALID_ARGUMENT, _UNAVAILABLE = 3, 14  # google.rpc.Code


class OtlpServer:
    """The receiver in a thread; publishes through one batching Publisher."""

    def __init__(self, settings: Settings, publisher: Publisher | None = None) -> None:
        if settings.api_token is None or not settings.api_token.get_secret_value():
            raise ConfigError(
                "the OTLP receiver needs a token: set HINDSIGHT_API_TOKEN (exporters send it as "
                "OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer <token>')"
            )
        self.settings = settings
        self.token = settings.api_token.get_secret_value().encode()
        self.publisher = publisher or Publisher(settings)
        self.dlq = Producer(producer_config(settings))
        self.flush_lock = threading.Lock()
        self.accepted = 0
        self.rejected = 0
        self.requests: dict[str, int] = {}  # by content type
        self.httpd, self.thread = bind(
            "OTLP receiver", settings.otlp_host, settings.otlp_port, _handler(self), "HINDSIGHT_OTLP_PORT"
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> OtlpServer:
        self.publisher.partition_count()  # fail now, not on the first request, if logs.raw is missing
        self.thread.start()
        log.info("otlp receiver listening address=%s:%s path=%s", self.settings.otlp_host, self.port, PATH)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.publisher.flush(10)
        self.dlq.flush(10)

    def export(self, body: bytes, content_type: str) -> tuple[int, str]:
        """Publish one request's records; returns (rejected count, first reason). Raises OtlpError."""
        self.requests[content_type] = self.requests.get(content_type, 0) + 1
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

    def authorized(self, header: str | None) -> bool:
        given = header[7:] if header and header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token)


def _handler(server: OtlpServer) -> type[BaseHTTPRequestHandler]:
    limit = server.settings.otlp_max_body_bytes

    class Handler(BaseHTTPRequestHandler):
        server_version = "hindsight-otlp"
        protocol_version = "HTTP/1.1"  # exporters keep the connection open between batches

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("otlp " + format, *args)  # never logs headers, so never the token

        def _reply(
            self, status: HTTPStatus, ctype: str, body: bytes, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _status(
            self, http: HTTPStatus, code: int, message: str, ctype: str, extra: dict[str, str] | None = None
        ) -> None:
            status = Status(code=code, message=message)
            if ctype == JSON:
                self._reply(http, JSON, json_format.MessageToJson(status, indent=None).encode(), extra)
            else:
                self._reply(http, PROTOBUF, status.SerializeToString(), extra)

        def _body(self) -> bytes | None:
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._reply(HTTPStatus.LENGTH_REQUIRED, "text/plain", b"Content-Length required")
                return None
            if length > limit:
                self.close_connection = True
                self._reply(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "text/plain", f"larger than {limit} bytes".encode()
                )
                return None
            body = self.rfile.read(length)
            encoding = (self.headers.get("Content-Encoding") or "identity").lower()
            if encoding == "gzip":
                inflater = zlib.decompressobj(wbits=31)
                try:
                    body = inflater.decompress(body, limit + 1)
                except zlib.error as exc:
                    raise OtlpError(f"bad gzip body: {exc}") from None
                if len(body) > limit or inflater.unconsumed_tail:
                    raise OtlpError(f"decompressed body larger than {limit} bytes")
            elif encoding != "identity":
                raise OtlpError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
            return body

        def do_POST(self) -> None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            answer = JSON if ctype == JSON else PROTOBUF
            if self.path.split("?")[0] != PATH:
                self.close_connection = True
                self._reply(HTTPStatus.NOT_FOUND, "text/plain", f"only {PATH} is served".encode())
                return
            if not server.authorized(self.headers.get("Authorization")):
                self.close_connection = True
                self._reply(
                    HTTPStatus.UNAUTHORIZED,
                    "text/plain",
                    b"missing or wrong bearer token",
                    {"WWW-Authenticate": 'Bearer realm="hindsight"'},
                )
                return
            if ctype not in (JSON, PROTOBUF):
                self.close_connection = True
                self._reply(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "text/plain", f"use {PROTOBUF} or {JSON}".encode()
                )
                return
            try:
                body = self._body()
                if body is None:
                    return
                rejected, reason = server.export(body, ctype)
            except OtlpError as exc:
                log.warning("otlp request refused reason=%s", str(exc)[:300])
                self._status(HTTPStatus.BAD_REQUEST, _INVALID_ARGUMENT, str(exc), answer)
                return
            except ConnectionError as exc:
                log.warning("otlp publish not confirmed error=%s", exc)
                self._status(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    _UNAVAILABLE,
                    f"Kafka did not confirm: {exc}",
                    answer,
                    {"Retry-After": "2"},
                )
                return
            response = ExportLogsServiceResponse()
            if rejected:
                response.partial_success.rejected_log_records = rejected
                response.partial_success.error_message = reason[:1000]
            if answer == JSON:
                self._reply(HTTPStatus.OK, JSON, json_format.MessageToJson(response, indent=None).encode())
            else:
                self._reply(HTTPStatus.OK, PROTOBUF, response.SerializeToString())

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):

                def refuse() -> None:
                    self.close_connection = True
                    self._reply(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"use POST", {"Allow": "POST"})

                return refuse
            raise AttributeError(name)

    return Handler
