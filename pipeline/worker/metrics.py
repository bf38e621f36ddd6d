"""The worker's Prometheus collector: lines in/out, triggers, dead letters, buffers, evictions, cost, lag.

The hot paths only bump ints; prometheus-client objects are built here, per scrape, from the
processor's stats snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from pipeline.metrics import LagCache, counter, gauge, labelled
from pipeline.rules.compiled import FAULTS
from pipeline.worker.processor import RawProcessor


class WorkerCollector(Collector):
    """The windowing worker: lines in/out, triggers, dead letters, buffers, evictions, cost, lag."""

    def __init__(self, processor: RawProcessor, lag: LagCache | None = None) -> None:
        self.processor = processor
        self.lag = lag
        self._avoided = 0  # kept monotonic: curated bytes may briefly run ahead of their raw bytes

    def collect(self) -> Iterator[Metric]:
        p = self.processor.stats()
        m = p.windows
        yield counter("hindsight_lines_in", "Raw lines decoded", m.lines_in)
        yield counter("hindsight_lines_out", "Lines emitted to logs.curated", m.lines_emitted)
        yield counter("hindsight_triggers", "Triggers fired", m.triggers)
        yield counter("hindsight_baseline_lines", "Lines kept by the WARN+ baseline alone", m.baseline)
        yield labelled("hindsight_trigger_lines", "Emitted lines per trigger reason", "reason", m.by_reason)
        yield labelled(
            "hindsight_trigger_bytes", "Message bytes emitted per trigger reason", "reason", m.bytes_by_reason
        )
        yield labelled("hindsight_dlq_records", "Records sent to logs.dlq", "error_type", p.dlq_by_type)
        yield counter(
            "hindsight_repeated_lines", "Lines ingest sent again after a restart, dropped", p.repeated_lines
        )
        yield counter("hindsight_raw_messages", "Messages read from logs.raw", p.raw_messages)
        yield counter(
            "hindsight_raw_bytes", "Bytes read from logs.raw (the cost of keeping all)", p.raw_bytes
        )
        yield counter("hindsight_curated_bytes", "Bytes sent to logs.curated (what is kept)", p.curated_bytes)
        yield counter("hindsight_kept_bytes", "Message bytes of the emitted lines", m.bytes_emitted)
        self._avoided = max(self._avoided, p.raw_bytes - p.curated_bytes)
        yield counter("hindsight_avoided_bytes", "Raw bytes not forwarded to storage", self._avoided)
        yield labelled(
            "hindsight_rule_kept_lines", "Emitted lines per matching rule", "rule", m.lines_by_rule
        )
        yield labelled(
            "hindsight_rule_kept_bytes", "Message bytes emitted per matching rule", "rule", m.bytes_by_rule
        )
        yield labelled(
            "hindsight_rule_dropped_lines", "Lines a drop rule kept out of storage", "rule", m.dropped_by_rule
        )
        yield labelled(
            "hindsight_rule_dropped_bytes",
            "Message bytes a drop rule kept out of storage",
            "rule",
            m.dropped_bytes_by_rule,
        )
        yield labelled(
            "hindsight_rule_custom_errors",
            "Exceptions raised by a rule's custom predicate (each counted as no match)",
            "rule",
            FAULTS.by_rule,
        )
        yield counter(
            "hindsight_evicted_lines", "Buffered lines evicted before their lookback ended", m.evicted_lines
        )
        yield counter(
            "hindsight_evicted_sessions", "Idle sessions evicted under the memory budget", m.evicted_sessions
        )
        yield counter(
            "hindsight_suppressed_lines", "Lines over the emission budget, summarised", m.suppressed_lines
        )
        yield counter(
            "hindsight_summary_records", "Summary records emitted for suppressed lines", m.summaries
        )
        yield gauge(
            "hindsight_buffer_bytes",
            "Message bytes held in the lookback buffers",
            p.buffered_bytes,
        )
        yield gauge("hindsight_templates", "Message templates in this worker's catalog", p.templates_known)
        yield counter(
            "hindsight_novel_templates", "Templates learned from a line of this worker", p.novel_templates
        )
        yield counter(
            "hindsight_novel_templates_suppressed",
            "Novel templates that did not fire: the service's budget was spent",
            p.novel_suppressed,
        )
        yield counter(
            "hindsight_templates_evicted",
            "Templates forgotten early: the catalog was at HINDSIGHT_TEMPLATES_MAX",
            p.templates_evicted,
        )
        yield gauge("hindsight_buffer_lines", "Lines held in the lookback buffers", p.buffered_lines)
        yield gauge("hindsight_sessions", "Sessions with state in this worker", p.sessions)
        yield gauge("hindsight_lookback_seconds", "Configured lookback", p.lookback_us / 1e6)
        yield gauge(
            "hindsight_effective_lookback_seconds",
            "Lookback a trigger can count on (shorter while sessions holding lines are evicted)",
            p.effective_lookback_us / 1e6,
        )
        yield gauge(
            "hindsight_buffer_budget_bytes",
            "Memory budget of the buffers",
            p.memory_budget_bytes,
        )
        if self.lag is not None:
            yield self.lag.metric()
