"""Prometheus exposition: the metrics endpoint, consumer lag, and the helpers every collector uses.

The hot paths only bump ints in dataclasses; prometheus-client objects are built here, per scrape, so
metrics cost nothing per line. Counters are named hindsight_<what>_<unit>_total.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError
from pipeline.settings import Settings

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

LagSource = Callable[[], dict[int, int]]


def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or ()))
    family.add_metric(list((labels or {}).values()), value)
    return family


def labelled(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


class LagCache:
    """Consumer lag asked from the broker at most every `every_s` seconds (a scrape must stay cheap)."""

    def __init__(self, group: str, topic: str, fetch: LagSource, every_s: float = 10.0) -> None:
        self.group, self.topic, self.fetch, self.every_s = group, topic, fetch, every_s
        self._at: float | None = None  # never fetched (not 0.0: monotonic() may be small after boot)
        self._value: dict[int, int] = {}
        self._lock = threading.Lock()

    def get(self) -> dict[int, int]:
        with self._lock:
            if self._at is None or time.monotonic() - self._at >= self.every_s:
                try:
                    self._value = self.fetch()
                except Exception as exc:  # a broker hiccup must not fail the scrape
                    log.debug("lag unavailable group=%s error=%s", self.group, exc)
                self._at = time.monotonic()
            return dict(self._value)

    def metric(self) -> Metric:
        family = GaugeMetricFamily(
            "hindsight_consumer_lag_messages",
            "Messages not yet committed by the consumer group, per partition",
            labels=["group", "topic", "partition"],
        )
        for partition, lag in sorted(self.get().items()):
            family.add_metric([self.group, self.topic, str(partition)], lag)
        return family


class _MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """prometheus_client's own server, with what it lacks: a deep accept queue (its 5 made 200
    clients take 29 s to connect) and quiet timeouts."""

    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request failed client=%s", client_address, exc_info=True)


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


def serve(settings: Settings, *collectors: Collector) -> Any:
    """Serve /metrics on settings.metrics_host:metrics_port; None when metrics_port is unset.

    Each connection has a socket timeout (HINDSIGHT_HTTP_HEADER_TIMEOUT_S): a client that never
    finishes its request no longer holds a thread for good."""
    if settings.metrics_port is None:
        return None
    registry = CollectorRegistry()
    # the standard process_* (CPU, memory, file descriptors), python_gc_* and python_info series
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)

    class Handler(WSGIRequestHandler):
        timeout = settings.http_header_timeout_s

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = make_server(
            settings.metrics_host,
            settings.metrics_port,
            make_wsgi_app(registry),
            _MetricsServer if ":" not in settings.metrics_host else _MetricsServer6,
            handler_class=Handler,
        )
    except OSError as exc:
        raise ConfigError(
            f"metrics cannot listen on {settings.metrics_host}:{settings.metrics_port} ({exc.strerror}); "
            "set HINDSIGHT_METRICS_PORT"
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics listening address=%s:%s", settings.metrics_host, server.server_address[1])
    return server
