"""Prometheus endpoints of a real worker and sink (real broker): the named series, with values that
agree with what was published and stored, and the consumer lag draining to zero."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.ops.workload import generate
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_summary
from tests.conftest import free_port

from .helpers import eventually, pipeline_running

pytestmark = pytest.mark.integration

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def test_worker_sink_and_ingest_expose_their_series(ns: Settings, tmp_path: Path) -> None:
    work = generate(sessions=30, requests_per_session=4, error_rate=0.2, lookback_s=ns.lookback_s, seed=5)
    wport, sport, iport = free_port(), free_port(), free_port()
    with pipeline_running(
        ns,
        tmp_path / "logs",
        ("--metrics-port", str(wport)),
        ("--metrics-port", str(sport)),
        ("--metrics-port", str(iport)),
    ):
        publisher = Publisher(ns)
        for record in work.lines:
            publisher.publish(record)
        assert publisher.flush(30) == 0
        bad = Producer(ns.kafka_client_config())
        bad.produce(ns.raw_topic, value=b"\x07 not a record", key=b"bad")
        assert bad.flush(10) == 0
        eventually(
            lambda: remote_summary(query_api(ns))["lines"] >= len(work.expected) or None, 60, "stored lines"
        )
        stored = int(remote_summary(query_api(ns))["lines"])

        worker = eventually(
            lambda: (w := scrape(wport)) and total(w, "hindsight_lines_in_total") == len(work.lines) and w,
            30,
            "the worker to count every line",
        )
        ingest = eventually(
            lambda: (i := scrape(iport)) and total(i, "hindsight_ingest_dlq_records_total") == 1 and i,
            30,
            "ingest to count its dead letter",
        )
        sink = eventually(
            lambda: (
                (s := scrape(sport))
                and total(s, "hindsight_sink_rows_total", topic=ns.curated_topic) == stored
                and total(s, "hindsight_consumer_lag_messages", topic=ns.curated_topic) == 0
                and s
            ),
            40,
            "the sink to count every stored row and its lag to drain",
        )

    assert total(worker, "hindsight_lines_out_total") == stored
    assert total(worker, "hindsight_trigger_lines_total", reason="error") > 0
    assert total(worker, "hindsight_triggers_total") >= len(work.incidents)
    # what cannot be decoded is dead-lettered by ingest, before the worker
    assert total(ingest, "hindsight_ingest_dlq_records_total", error_type="not_json") == 1
    assert total(worker, "hindsight_dlq_records_total") == 0
    assert total(ingest, "hindsight_ingest_lines_out_total") == len(work.lines)
    assert total(ingest, "hindsight_ingest_shape_lines_total", shape="canonical") == len(work.lines)
    ingest_lag = [lab for lab, _ in ingest["hindsight_consumer_lag_messages"]]
    assert {(lab["group"], lab["topic"]) for lab in ingest_lag} == {(ns.ingest_group, ns.raw_topic)}
    raw, curated = total(worker, "hindsight_raw_bytes_total"), total(worker, "hindsight_curated_bytes_total")
    assert raw > curated > 0 and total(worker, "hindsight_avoided_bytes_total") == raw - curated
    assert total(worker, "hindsight_sessions") > 0 and total(worker, "hindsight_buffer_bytes") > 0
    lag = [lab for lab, _ in worker["hindsight_consumer_lag_messages"]]
    assert {lab["group"] for lab in lag} == {ns.app_id} and {lab["topic"] for lab in lag} == {
        ns.sessions_topic
    }
    batches = total(sink, "hindsight_sink_batches_total", topic=ns.curated_topic)
    assert batches >= 1
    assert total(sink, "hindsight_sink_batch_seconds_count", topic=ns.curated_topic) >= 1
    assert total(sink, "hindsight_sink_batch_seconds_sum", topic=ns.curated_topic) > 0
    assert total(sink, "hindsight_sink_dlq_rows_total") == 0
