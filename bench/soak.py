"""Soak: a steady rate for ten minutes through the whole pipeline (ingest, worker, ClickHouse sink),
with planted incidents whose ground truth is known. An erroring session's ERROR comes ~50 s after its
other lines, so the worker must still hold them then, under the full load. Reports recall (stored
lines of the planted incidents over the lines they must keep), evictions, the worker's RSS and the
lag; a pass is recall 1.0 with no eviction and a bounded lag. Writes bench/results/soak.json.

    SOAK_RATE=20000 SOAK_SECONDS=600 python bench/soak.py
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from common import bench_broker, free_port, machine
from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from pipeline.kafka import ensure_topics
from pipeline.ops.demo import start_child, wait_until
from pipeline.ops.workload import generate
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_sql, remote_summary
from pipeline.types import Level, LogRecord

RESULTS = Path(__file__).resolve().parent / "results"
ERROR_DELAY_S = 50.0  # inside the 60 s lookback: the session's lines must still be buffered


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    """Publishes a generated workload at `rate` lines/s, cycle after cycle (fresh session ids, times
    of now), holding each erroring session's ERROR back ERROR_DELAY_S; records what must be kept."""

    def __init__(self, settings: Settings, rate: int, seconds: float) -> None:
        self.settings, self.rate, self.seconds = settings, rate, seconds
        work = generate(
            sessions=500, requests_per_session=6, seed=21, latency_floor_ms=settings.latency_floor_ms
        )
        self.template = work.lines
        self.sent = 0
        self.expected: dict[str, int] = {}  # incident session -> lines it must keep
        self.held: deque[tuple[float, LogRecord]] = deque()  # (due, ERROR line)
        self.stop = threading.Event()
        self.elapsed = 0.0
        self.steady_lines = 0  # sent in the steady phase (then only the last held ERRORs follow)
        self.steady_s = 0.0

    def run(self) -> None:
        pub = Publisher(self.settings)
        start = time.monotonic()
        cycle = 0
        try:
            while not self.stop.is_set() and time.monotonic() - start < self.seconds:
                cycle += 1
                self._cycle(pub, cycle, start)
            self.steady_lines, self.steady_s = self.sent, time.monotonic() - start
            while self.held and not self.stop.is_set():  # the last held errors, on time
                due = self.held[0][0]
                time.sleep(max(0.0, due - time.monotonic()))
                self._release(pub)
        finally:
            pub.flush(60)
            self.elapsed = time.monotonic() - start

    def _cycle(self, pub: Publisher, cycle: int, start: float) -> None:
        sessions: dict[str, list[LogRecord]] = {}
        for i, tmpl in enumerate(self.template):
            if i % 200 == 0:  # pace per 200 lines: per-line sleeps cost more than they wait
                delay = start + self.sent / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                while self.held and self.held[0][0] <= time.monotonic():
                    self._release(pub)
            sid = f"{tmpl['session_id']}-{cycle}"
            rec: LogRecord = {**tmpl, "timestamp": time.time_ns() // 1000, "session_id": sid}
            sessions.setdefault(sid, []).append(rec)
            if rec["level"] == "ERROR":
                self.held.append((time.monotonic() + ERROR_DELAY_S, rec))
                continue
            pub.publish(rec)
            self.sent += 1
        for sid, lines in sessions.items():
            # every line of an incident session falls in its trigger's window (lookback 60 s, follow
            # 30 s): a spike keeps its whole session, an ERROR 50 s later too
            if any(
                r["level"] == "ERROR" or (r["latency_ms"] or 0) > self.settings.latency_floor_ms
                for r in lines
            ):
                self.expected[sid] = len(lines)
            else:
                assert all(Level[r["level"]] < Level.WARN for r in lines)

    def _release(self, pub: Publisher) -> None:
        _, rec = self.held.popleft()
        rec["timestamp"] = time.time_ns() // 1000
        pub.publish(rec)
        self.sent += 1


def lag(consumer: Consumer, settings: Settings, topic: str) -> int:
    parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
    end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    try:
        done = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    except Exception:
        return -1
    return int(end - done)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def main() -> None:
    rate = int(os.environ.get("SOAK_RATE", "20000"))
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    samples: list[dict[str, float]] = []
    with bench_broker() as base:
        run = uuid.uuid4().hex[:8]
        settings = base.namespaced(
            f"soak.{run}",
            wire_format="json",
            chdb_path=base.home / f"soak-{run}" / "chdb",
            query_port=free_port(),
        )
        ensure_topics(settings)
        logs = settings.home / f"soak-{run}" / "logs"
        metrics_port = free_port()
        worker = start_child(
            "worker", ["worker"], settings.model_copy(update={"metrics_port": metrics_port}), logs
        )
        sink = start_child("sink", ["sink", "clickhouse"], settings, logs)
        ingest = start_child("ingest", ["ingest"], settings, logs)
        children = [worker, sink, ingest]
        wait_until("query API", lambda: remote_summary(query_api(settings), 2) is not None, 120, children)
        time.sleep(5)
        load = Load(settings, rate, seconds)
        publisher = threading.Thread(target=load.run, daemon=True)
        publisher.start()
        consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id})
        ingest_consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.ingest_group})
        started = time.monotonic()
        total = int(seconds + ERROR_DELAY_S)
        try:
            with tqdm(total=total, unit="s", desc="soak", file=sys.stderr) as bar:
                while publisher.is_alive():
                    for child in children:
                        child.check()
                    now = time.monotonic() - started
                    samples.append(
                        {
                            "t_s": round(now, 1),
                            "sent_lines": load.sent,
                            "rss_mb": rss_mb(worker.proc.pid),
                            "worker_lag_messages": lag(consumer, settings, settings.sessions_topic),
                            "ingest_lag_messages": lag(ingest_consumer, settings, settings.raw_topic),
                            "evicted_lines": metric(metrics_port, "hindsight_evicted_lines_total"),
                        }
                    )
                    bar.update(min(int(now), total) - bar.n)
                    time.sleep(10)
            want = sum(load.expected.values())
            stored = 0
            deadline = time.monotonic() + 180  # the pipeline drains what is in flight
            while time.monotonic() < deadline:
                rows = remote_sql(
                    query_api(settings),
                    "SELECT SessionId AS s, uniqExact(Timestamp, Body) AS n "
                    f"FROM {settings.clickhouse_database}.logs GROUP BY SessionId",
                    1_000_000,
                )
                got = {r["s"]: int(r["n"]) for r in rows}
                stored = sum(min(got.get(sid, 0), n) for sid, n in load.expected.items())
                if stored >= want:
                    break
                time.sleep(5)
            evicted = metric(metrics_port, "hindsight_evicted_lines_total")
            effective = metric(metrics_port, "hindsight_effective_lookback_seconds")
        finally:
            consumer.close()
            ingest_consumer.close()
            for child in reversed(children):
                child.stop()
    later = [s for s in samples if s["t_s"] >= seconds / 4]
    rss = [s["rss_mb"] for s in later] or [0.0]
    lags = [s["worker_lag_messages"] for s in samples if s["worker_lag_messages"] >= 0] or [0]
    ingest_lags = [s["ingest_lag_messages"] for s in samples if s["ingest_lag_messages"] >= 0] or [0]
    recall = stored / want if want else 1.0
    achieved = load.steady_lines / load.steady_s if load.steady_s else 0.0
    out: dict[str, Any] = {
        "machine": machine(),
        "rate_target_lines_per_s": rate,
        "rate_achieved_lines_per_s": round(achieved),
        "seconds": seconds,
        "lines_sent": load.sent,
        "incident_sessions": len(load.expected),
        "incident_lines_expected": want,
        "incident_lines_stored": stored,
        "recall": recall,
        "evicted_lines": evicted,
        "effective_lookback_s": effective,
        "rss_mb_at_quarter": rss[0],
        "rss_mb_max": max(rss),
        "rss_mb_last": rss[-1],
        "worker_lag_messages_max": max(lags),
        "worker_lag_messages_last": lags[-1],
        "ingest_lag_messages_max": max(ingest_lags),
        "ingest_lag_messages_last": ingest_lags[-1],
        # bounded: the stages keep up, so at the end at most a few seconds of messages wait
        "lag_bounded": lags[-1] <= 1000 and ingest_lags[-1] <= 20 * rate,
        "passed": recall == 1.0 and evicted == 0 and lags[-1] <= 1000 and ingest_lags[-1] <= 20 * rate,
        "samples": samples,
    }
    for key, value in out.items():
        if key != "samples":
            print(f"{key:<28} {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(out, indent=2) + "\n")
    if not out["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
