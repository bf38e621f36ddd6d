"""Windows and triggers through the real broker: the exact ground-truth set, and a kill -9 restart."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.ops.demo import start_child
from pipeline.ops.workload import incident_workload
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_stats, remote_summary
from pipeline.store.query import QueryFilters

from .helpers import consume_all, eventually, pipeline_running, wait_drained

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("curated_format", ["avro", "json"])
def test_ground_truth_workload_exact_set(ns: Settings, tmp_path: Path, curated_format: str) -> None:
    settings = ns.model_copy(
        update={
            "curated_format": curated_format,
            "stats_window_s": 5.0,
            "stats_grace_s": 120.0,
            "key_budget_lps": 1e6,
            "global_budget_lps": 1e7,
        }
    )
    work = incident_workload(sessions=90, lookback_s=settings.lookback_s, follow_s=settings.follow_s, seed=4)
    with pipeline_running(settings, tmp_path / "logs"):
        publisher = Publisher(settings)
        for record in work.lines:
            publisher.publish(record)
        assert publisher.flush(30) == 0 and publisher.metrics.failed == 0
        eventually(
            lambda: remote_summary(query_api(settings))["lines"] >= len(work.expected) or None, 60, "lines"
        )
        wait_drained(settings, 60)  # anything extra has arrived once every stage committed all
        rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
        # every window closes (by event time, or once its partition is quiet for the grace period);
        # each partition's part of a window arrives on its own, so wait for all lines to be accounted for
        stats = eventually(
            lambda: (
                (st := remote_stats(query_api(settings), {"limit": "1000"}))
                and sum(s["count"] for s in st) == len(work.lines)
                and st
            ),
            60,
            "endpoint stats of every line",
        )
    got = {(r["session_id"], r["message"], r["timestamp_us"]) for r in rows}
    assert len(got) == len(rows)
    assert got == work.expected
    # the curated topic held the configured encoding (Avro single-object header, or a JSON array)
    curated = [m.value() for m in consume_all(settings, settings.curated_topic, 1, timeout=10)]
    assert curated and all(v[:1] == (b"[" if curated_format == "json" else b"\xc3") for v in curated)
    reasons = {reason for r in rows for reason in r["trigger_reasons"]}
    assert {"error", "latency", "timeout", "security", "auth_failures", "baseline"} <= reasons | {"baseline"}
    # window statistics reached hindsight.endpoint_stats: each closed window accounts for all its lines
    assert all(s["count"] > 0 and s["p95_ms"] is not None for s in stats)
    by_window: dict[tuple[str, int], int] = {}
    for r in work.lines:
        key = (r["endpoint"] or "", r["timestamp"] - r["timestamp"] % 5_000_000)
        by_window[key] = by_window.get(key, 0) + 1
    for s in stats:
        assert s["count"] == by_window[(s["endpoint"], s["window_start_us"])]


def test_worker_killed_between_early_lines_and_error_still_emits_them(ns: Settings, tmp_path: Path) -> None:
    ns = ns.model_copy(update={"worker_session_timeout_s": 6.0})
    session = f"restart-{ns.app_id}"
    now_us = time.time_ns() // 1000
    producer = Producer(ns.kafka_client_config())

    def send(i: int, level: str) -> None:
        line = {"timestamp": now_us + i * 1000, "service": "svc", "level": level, "message": f"early {i}"
                if level != "ERROR" else "the error", "session_id": session}  # fmt: skip
        producer.produce(ns.raw_topic, value=orjson.dumps(line), key=session.encode())
        assert producer.flush(10) == 0

    with pipeline_running(ns, tmp_path / "logs") as children:
        worker = children[0]
        for i in range(5):
            send(i, "DEBUG")
        # ingest passes the early lines on to logs.sessions first; then the worker commits them
        ingest = Consumer({**ns.kafka_client_config(), "group.id": ns.ingest_group})
        raw = [TopicPartition(ns.raw_topic, p) for p in range(ns.partitions)]
        raw_end = sum(ingest.get_watermark_offsets(tp, timeout=10)[1] for tp in raw)
        eventually(
            lambda: sum(max(tp.offset, 0) for tp in ingest.committed(raw, timeout=10)) >= raw_end,
            30,
            "ingest to pass the early lines on",
        )
        ingest.close()
        consumer = Consumer({**ns.kafka_client_config(), "group.id": ns.app_id})
        parts = [TopicPartition(ns.sessions_topic, p) for p in range(ns.partitions)]
        end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
        assert end > 0

        def committed_all() -> bool:
            return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)) >= end

        eventually(committed_all, 30, "the worker to commit the early lines")
        consumer.close()
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        assert remote_query(query_api(ns), QueryFilters(session=session)) == []

        children[0] = start_child("worker2", ["--log-level", "INFO", "worker"], ns, tmp_path / "logs")
        send(99, "ERROR")
        rows = eventually(
            lambda: (r := remote_query(query_api(ns), QueryFilters(session=session))) and len(r) >= 6 and r,
            60,
            "the early lines after the restart",
        )
    assert [r["message"] for r in rows] == [f"early {i}" for i in range(5)] + ["the error"]
    assert (tmp_path / "logs" / "worker2.log").read_text().count("rebuilt window state") >= 1


def test_the_global_emission_budget_summarises_a_storm_end_to_end(ns: Settings, tmp_path: Path) -> None:
    """Over the worker's global budget, lines are summarised, not dropped: in the store, the kept
    lines plus the lines the summaries count are exactly every line the triggers asked to keep."""
    settings = ns.model_copy(update={"key_budget_lps": 1e6, "global_budget_lps": 20.0})
    now = time.time_ns() // 1000
    lines = [
        {"timestamp": now + s * 1000 + i, "service": "storm", "level": "ERROR" if i == 9 else "DEBUG",
         "message": f"s{s} line {i}", "session_id": f"storm-{settings.app_id}-{s}"}
        for s in range(30)
        for i in range(10)
    ]  # fmt: skip
    with pipeline_running(settings, tmp_path / "logs"):
        publisher = Publisher(settings)
        for line in lines:
            publisher.publish_obj(line)
        assert publisher.flush(30) == 0

        def accounted() -> tuple[int, int] | None:
            rows = remote_query(query_api(settings), QueryFilters(service="storm", limit=100_000))
            summaries = [r for r in rows if r["trigger_reasons"] == ["summary"]]
            kept = [r for r in rows if r["trigger_reasons"] != ["summary"]]
            counted = sum(int(r["attributes"]["hindsight.summary.lines"]) for r in summaries)
            return (len(kept), counted) if summaries and len(kept) + counted >= len(lines) else None

        kept, counted = eventually(accounted, 120, "kept plus summarised lines to cover the storm")
    print(f"global budget 20 lines/s: {kept} lines kept, {counted} summarised, of {len(lines)}")
    assert kept + counted == len(lines) and counted > 0 and kept < len(lines)
