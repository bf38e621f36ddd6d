"""Prometheus exposition: collectors that read the pipeline's plain counters when scraped.

The hot paths only bump ints in dataclasses; prometheus-client objects are built here, per scrape, so
metrics cost nothing per line. Counters are named hindsight_<what>_<unit>_total.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.errors import ConfigError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from connectors.base.runner import SinkRunner
    from pipeline.worker.processor import RawProcessor

log = logging.getLogger(__name__)

LagSource = Callable[[], dict[int, int]]


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or ()))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _labelled(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
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


class WorkerCollector(Collector):
    """The windowing worker: lines in/out, triggers, dead letters, buffers, evictions, cost, lag."""

    def __init__(self, processor: RawProcessor, lag: LagCache | None = None) -> None:
        self.processor = processor
        self.lag = lag
        self._avoided = 0  # kept monotonic: curated bytes may briefly run ahead of their raw bytes

    def collect(self) -> Iterator[Metric]:
        p = self.processor
        m = p.windows.metrics
        yield _counter("hindsight_lines_in", "Raw lines decoded", m.lines_in)
        yield _counter("hindsight_lines_out", "Lines emitted to logs.curated", m.lines_emitted)
        yield _counter("hindsight_triggers", "Triggers fired", m.triggers)
        yield _counter("hindsight_baseline_lines", "Lines kept by the WARN+ baseline alone", m.baseline)
        yield _labelled("hindsight_trigger_lines", "Emitted lines per trigger reason", "reason", m.by_reason)
        yield _labelled(
            "hindsight_trigger_bytes", "Message bytes emitted per trigger reason", "reason", m.bytes_by_reason
        )
        yield _labelled("hindsight_dlq_records", "Records sent to logs.dlq", "error_type", p.dlq_by_type)
        yield _counter("hindsight_raw_messages", "Messages read from logs.raw", p.raw_messages)
        yield _counter(
            "hindsight_raw_bytes", "Bytes read from logs.raw (the cost of keeping all)", p.raw_bytes
        )
        yield _counter(
            "hindsight_curated_bytes", "Bytes sent to logs.curated (what is kept)", p.curated_bytes
        )
        yield _counter("hindsight_kept_bytes", "Message bytes of the emitted lines", m.bytes_emitted)
        self._avoided = max(self._avoided, p.raw_bytes - p.curated_bytes)
        yield _counter("hindsight_avoided_bytes", "Raw bytes not forwarded to storage", self._avoided)
        yield _labelled(
            "hindsight_rule_kept_lines", "Emitted lines per matching rule", "rule", m.lines_by_rule
        )
        yield _labelled(
            "hindsight_rule_kept_bytes", "Message bytes emitted per matching rule", "rule", m.bytes_by_rule
        )
        yield _labelled(
            "hindsight_rule_dropped_lines", "Lines a drop rule kept out of storage", "rule", m.dropped_by_rule
        )
        yield _labelled(
            "hindsight_rule_dropped_bytes",
            "Message bytes a drop rule kept out of storage",
            "rule",
            m.dropped_bytes_by_rule,
        )
        yield _counter(
            "hindsight_evicted_lines", "Buffered lines evicted before their lookback ended", m.evicted_lines
        )
        yield _counter(
            "hindsight_evicted_sessions", "Idle sessions evicted under the memory budget", m.evicted_sessions
        )
        yield _counter(
            "hindsight_suppressed_lines", "Lines over the emission budget, summarised", m.suppressed_lines
        )
        yield _counter(
            "hindsight_summary_records", "Summary records emitted for suppressed lines", m.summaries
        )
        yield _gauge(
            "hindsight_buffer_bytes",
            "Message bytes held in the lookback buffers",
            p.windows.shared.buffered_bytes,
        )
        yield _gauge(
            "hindsight_buffer_lines", "Lines held in the lookback buffers", p.windows.buffered_lines()
        )
        yield _gauge("hindsight_sessions", "Sessions with state in this worker", p.windows.sessions())
        yield _gauge(
            "hindsight_buffer_budget_bytes",
            "Memory budget of the buffers",
            p.windows.config.memory_budget_bytes,
        )
        if self.lag is not None:
            yield self.lag.metric()


class SinkCollector(Collector):
    """Sink runners: rows, batches, retries, dead letters, batch latency, lag."""

    def __init__(self, runners: Iterable[SinkRunner], lags: Iterable[LagCache] = ()) -> None:
        self.runners = list(runners)
        self.lags = list(lags)

    def collect(self) -> Iterator[Metric]:
        from connectors.base.runner import BATCH_BUCKETS_S

        labels = ["sink", "topic"]
        families = {
            key: CounterMetricFamily(f"hindsight_sink_{key}", doc, labels=labels)
            for key, doc in (
                ("rows", "Rows written and flushed"),
                ("batches", "Batches written"),
                ("retries", "Retries while the store was unavailable"),
                ("dlq_rows", "Rows the store rejected, dead-lettered"),
                ("dlq_messages", "Curated messages that did not decode, dead-lettered"),
            )
        }
        latency = HistogramMetricFamily(
            "hindsight_sink_batch_seconds",
            "Write+flush time per batch, retries included",
            labels=["sink", "topic"],
        )
        for runner in self.runners:
            m = runner.metrics
            name = [runner.sink.name, runner.topic]
            families["rows"].add_metric(name, m.rows_written)
            families["batches"].add_metric(name, m.batches)
            families["retries"].add_metric(name, m.retries)
            families["dlq_rows"].add_metric(name, m.dlq_rows)
            families["dlq_messages"].add_metric(name, m.dlq_messages)
            buckets = [
                ("+Inf" if bound == float("inf") else repr(bound), count)
                for bound, count in zip(BATCH_BUCKETS_S, list(m.batch_seconds_buckets), strict=True)
            ]
            latency.add_metric(name, buckets, m.batch_seconds_sum)
        yield from families.values()
        yield latency
        for lag in self.lags:
            yield lag.metric()


class OtlpCollector(Collector):
    """The OTLP receiver: requests by content type, records accepted and dead-lettered."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield _labelled(
            "hindsight_otlp_requests",
            "OTLP export requests by content type",
            "content_type",
            self.server.requests,
        )
        yield _counter("hindsight_otlp_records", "Log records published to logs.raw", self.server.accepted)
        yield _counter("hindsight_otlp_rejected_records", "Log records dead-lettered", self.server.rejected)


def serve(settings: Settings, *collectors: Collector) -> Any:
    """Serve /metrics on settings.metrics_host:metrics_port; None when metrics_port is unset."""
    if settings.metrics_port is None:
        return None
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"metrics cannot listen on {settings.metrics_host}:{settings.metrics_port} ({exc.strerror}); "
            "set HINDSIGHT_METRICS_PORT"
        ) from None
    log.info("metrics listening address=%s:%s", settings.metrics_host, server.server_address[1])
    return server
