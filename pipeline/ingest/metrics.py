"""The ingest stage's Prometheus collector: raw messages and lines in, canonical lines out, lines per
shape, dead letters by reason, consumer lag."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from pipeline.ingest.stage import IngestStage
from pipeline.metrics import LagCache, counter, labelled


class IngestCollector(Collector):
    def __init__(self, stage: IngestStage, shapes: dict[str, int], lag: LagCache | None = None) -> None:
        self.stage = stage
        self.shapes = shapes
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        s = self.stage
        yield counter("hindsight_ingest_messages", "Raw messages read by ingest", s.messages_in)
        yield counter("hindsight_ingest_lines_in", "Lines decoded or refused by ingest", s.lines_in)
        yield counter("hindsight_ingest_lines_out", "Canonical lines written to logs.sessions", s.lines_out)
        yield labelled("hindsight_ingest_shape_lines", "Lines decoded per shape", "shape", dict(self.shapes))
        yield labelled(
            "hindsight_ingest_dlq_records",
            "Records ingest sent to logs.dlq",
            "error_type",
            dict(s.dlq_by_type),
        )
        if self.lag is not None:
            yield self.lag.metric()
