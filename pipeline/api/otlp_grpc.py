"""OTLP/gRPC logs receiver (LogsService/Export, port 4317): the same export path as OTLP/HTTP.

The Collector's default `otlp` exporter and most SDKs speak gRPC. Requests are taken as their own
protobuf bytes (no deserializer in the method handler), so they go through the parser, mapping, DLQ
and delivery check of the HTTP receiver (OtlpServer.export). As the OTLP spec asks: OK with an
ExportLogsServiceResponse (partial_success for dead-lettered records), INVALID_ARGUMENT for a
payload that does not decode, UNAVAILABLE when Kafka did not confirm (exporters retry it),
UNAUTHENTICATED / PERMISSION_DENIED for a missing or wrong token (metadata `authorization: Bearer
…`), RESOURCE_EXHAUSTED from gRPC itself beyond the size or concurrency limits. gzip is gRPC's own
message compression, handled by the library.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from pipeline.api.base import Tokens
from pipeline.api.otlp import OtlpServer
from pipeline.errors import ConfigError
from pipeline.extras import require
from pipeline.settings import Settings
from pipeline.wire.otlp import PROTOBUF, OtlpError

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
LABEL = "grpc"  # hindsight_otlp_requests_total{content_type="grpc"}


class OtlpGrpcServer:
    """gRPC's own server (a thread pool) in front of an OtlpServer's export path."""

    def __init__(self, settings: Settings, receiver: OtlpServer) -> None:
        grpc = require("grpc", "the OTLP/gRPC receiver (HINDSIGHT_OTLP_GRPC_PORT=0 turns it off)")
        self.grpc: Any = grpc
        self.settings = settings
        self.receiver = receiver
        self.tokens = Tokens.from_settings(settings)
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)}
        )
        limit = settings.otlp_max_body_bytes
        self.server = grpc.server(
            # each call waits for Kafka's confirmation (up to request_timeout_s): threads, not CPU, bound it
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="otlp-grpc"),
            handlers=[handler],
            maximum_concurrent_rpcs=settings.http_max_connections,
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )
        address = f"{settings.otlp_host}:{settings.otlp_grpc_port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(
                f"the OTLP/gRPC receiver cannot listen on {address} ({exc}); set HINDSIGHT_OTLP_GRPC_PORT"
            ) from None

    def start(self) -> Self:
        self.server.start()
        log.info("otlp grpc receiver ready address=%s:%s", self.settings.otlp_host, self.port)
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        self.server.stop(grace_s).wait(grace_s + 1)

    def _export(self, request: bytes, context: Any) -> bytes:
        code = self.grpc.StatusCode
        metadata = dict(context.invocation_metadata())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        scopes = self.tokens.scopes(token.strip().encode()) if scheme.lower() == "bearer" else None
        if scopes is None:
            context.abort(code.UNAUTHENTICATED, "send metadata authorization: Bearer <token>")
        elif "ingest" not in scopes:
            context.abort(code.PERMISSION_DENIED, "this token may not send logs (it lacks the ingest scope)")
        try:
            rejected, reason = self.receiver.export(request, PROTOBUF, LABEL)
        except OtlpError as exc:
            log.warning("otlp grpc request refused reason=%s", str(exc)[:300])
            context.abort(code.INVALID_ARGUMENT, str(exc)[:1000])
        except ConnectionError as exc:
            log.warning("otlp grpc publish not confirmed error=%s", exc)
            context.abort(code.UNAVAILABLE, f"Kafka did not confirm: {exc}")
        response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = reason[:1000]
        out: bytes = response.SerializeToString()
        return out
