"""The sink runners' Prometheus collector: rows, batches, retries, dead letters, batch latency, lag."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.base.runner import BATCH_BUCKETS_S, SinkRunner
from pipeline.metrics import LagCache


class SinkCollector(Collector):
    """Sink runners: rows, batches, retries, dead letters, batch latency, lag."""

    def __init__(self, runners: Iterable[SinkRunner], lags: Iterable[LagCache] = ()) -> None:
        self.runners = list(runners)
        self.lags = list(lags)

    def collect(self) -> Iterator[Metric]:
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
