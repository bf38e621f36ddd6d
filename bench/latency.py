"""Trigger-to-queryable latency and storage reduction with incident recall, through the whole
pipeline (real broker, worker, ClickHouse sink on chDB, query API). Writes bench/results/latency.json.

- latency: an ERROR line is published at t0; how long until `hindsight query --session` returns it;
- storage: the reference incident workload: stored bytes / raw bytes (JSON), recall of the lines a
  correct pipeline keeps, and of the planted incidents.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from common import bench_broker, free_port, machine
from tqdm import tqdm

from pipeline.kafka import ensure_topics
from pipeline.ops.demo import start_child, wait_until
from pipeline.ops.workload import Workload, incident_workload
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_summary
from pipeline.store.query import QueryFilters

RESULTS = Path(__file__).resolve().parent / "results"


def measure(settings: Settings, triggers: int) -> dict[str, Any]:
    pub = Publisher(settings)
    work = incident_workload(
        sessions=300, lookback_s=settings.lookback_s, follow_s=settings.follow_s, seed=31
    )
    for rec in work.lines:
        pub.publish(rec)
    pub.flush(30)
    latencies = []
    for i in tqdm(range(triggers), desc="trigger -> queryable", file=sys.stderr):
        session = f"lat-{uuid.uuid4().hex[:8]}"
        now = time.time_ns() // 1000
        for j in range(5):
            pub.publish_obj(
                {
                    "timestamp": now - (5 - j) * 1000,
                    "service": "lat",
                    "level": "DEBUG",
                    "message": f"before {j}",
                    "session_id": session,
                }
            )
        pub.flush(10)
        start = time.perf_counter()
        pub.publish_obj(
            {"timestamp": now, "service": "lat", "level": "ERROR", "message": "boom", "session_id": session}
        )
        pub.flush(10)
        while True:
            rows = remote_query(query_api(settings), QueryFilters(session=session))
            if any(r["message"] == "boom" for r in rows):
                latencies.append((time.perf_counter() - start) * 1000)
                break
            if time.perf_counter() - start > 60:
                raise SystemExit(f"trigger {i} not queryable within 60 s")
            time.sleep(0.01)
    latencies.sort()
    rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
    got = {(r["session_id"], r["message"], r["timestamp_us"]) for r in rows} & {
        Workload.key(r) for r in work.lines
    }
    kept_lines = [r for r in work.lines if Workload.key(r) in got]
    raw_bytes = sum(len(orjson.dumps(r)) for r in work.lines)
    stored_bytes = sum(len(orjson.dumps(r)) for r in kept_lines)
    planted = {(i.session_id, i.timestamp) for i in work.injected}
    found = {(r["session_id"], r["timestamp"]) for r in kept_lines} & planted
    return {
        "latency_p50_ms": latencies[len(latencies) // 2],
        "latency_p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)],
        "latency_max_ms": latencies[-1],
        "reference_raw_lines": len(work.lines),
        "reference_stored_lines": len(kept_lines),
        "stored_to_raw_bytes": stored_bytes / raw_bytes,
        "line_recall": len(got & work.expected) / len(work.expected),
        "extra_lines": len(got - work.expected),
        "incident_recall": len(found) / len(planted),
        "store_summary_lines": remote_summary(query_api(settings))["lines"],
    }


def main() -> None:
    triggers = int(os.environ.get("BENCH_TRIGGERS", "50"))
    children: list[Any] = []
    with bench_broker() as base:
        try:
            with tempfile.TemporaryDirectory() as store:
                settings = base.namespaced(
                    f"lat.{uuid.uuid4().hex[:8]}",
                    chdb_path=Path(store),
                    query_port=free_port(),
                    key_budget_lps=1e6,
                    global_budget_lps=1e7,
                    publish_linger_ms=5,
                )
                ensure_topics(settings)
                log_dir = settings.home / "latency-logs"
                children.append(start_child("ingest", ["ingest"], settings, log_dir))
                children.append(start_child("worker", ["worker"], settings, log_dir))
                children.append(start_child("sink", ["sink", "clickhouse"], settings, log_dir))
                wait_until(
                    "the query API", lambda: remote_summary(query_api(settings), 2) is not None, 90, children
                )
                out: dict[str, Any] = {
                    "machine": machine(),
                    "triggers": triggers,
                    "publish_linger_ms": settings.publish_linger_ms,
                    "sink_batch_ms": settings.sink_batch_ms,
                }
                out.update(measure(settings, triggers))
        finally:
            for child in reversed(children):
                child.stop()
    for key, value in out.items():
        print(f"{key:<24} {value:,.3f}" if isinstance(value, float) else f"{key:<24} {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
