"""Soak: publish at a fixed rate for a while through a real worker, sampling its memory and the
consumer lag. Reports whether memory stays flat and the lag bounded; writes bench/results/soak.json.

    SOAK_RATE=5000 SOAK_SECONDS=600 python bench/soak.py
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from common import bench_broker, machine
from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from pipeline.kafka import ensure_topics
from pipeline.ops.demo import start_child
from pipeline.ops.workload import generate
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def publish_at(settings: Settings, rate: int, seconds: float, stop: threading.Event) -> None:
    template = generate(sessions=500, requests_per_session=6, seed=21).lines
    pub = Publisher(settings)
    start = time.monotonic()
    sent = 0
    cycle = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        cycle += 1
        for rec in template:
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pub.publish(
                {**rec, "timestamp": time.time_ns() // 1000, "session_id": f"{rec['session_id']}-{cycle}"}
            )
            sent += 1
            if stop.is_set() or time.monotonic() - start >= seconds:
                break
    pub.flush(60)


def lag(consumer: Consumer, settings: Settings) -> int:
    parts = [TopicPartition(settings.sessions_topic, p) for p in range(settings.partitions)]
    end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    try:
        done = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    except Exception:
        return -1
    return end - done


def main() -> None:
    rate = int(os.environ.get("SOAK_RATE", "5000"))
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    samples: list[dict[str, float]] = []
    with bench_broker() as base:
        settings = base.namespaced(f"soak.{uuid.uuid4().hex[:8]}", wire_format="json")
        ensure_topics(settings)
        worker = start_child("worker", ["worker"], settings, settings.home / "soak-logs")
        ingest = start_child("ingest", ["ingest"], settings, settings.home / "soak-logs")
        time.sleep(5)
        stop = threading.Event()
        publisher = threading.Thread(target=publish_at, args=(settings, rate, seconds, stop), daemon=True)
        publisher.start()
        consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id})
        started = time.monotonic()
        with tqdm(total=int(seconds), unit="s", desc="soak", file=sys.stderr) as bar:
            while publisher.is_alive():
                worker.check()
                ingest.check()
                now = time.monotonic() - started
                samples.append(
                    {"t_s": now, "rss_mb": rss_mb(worker.proc.pid), "lag_messages": lag(consumer, settings)}
                )
                bar.update(int(now) - bar.n)
                time.sleep(10)
        consumer.close()
        ingest.stop()
        worker.stop()
    later = [s for s in samples if s["t_s"] >= seconds / 4]
    rss = [s["rss_mb"] for s in later] or [0.0]
    lags = [s["lag_messages"] for s in samples if s["lag_messages"] >= 0] or [0]
    out: dict[str, Any] = {
        "machine": machine(),
        "rate_lines_per_s": rate,
        "seconds": seconds,
        "rss_mb_at_quarter": rss[0],
        "rss_mb_last": rss[-1],
        "rss_mb_max": max(rss),
        "memory_flat": rss[-1] <= rss[0] * 1.15,
        "lag_messages_max": max(lags),
        "lag_messages_last": lags[-1],
        # bounded: the worker keeps up, so at the end at most a few seconds of messages are waiting
        "lag_bounded": lags[-1] <= 1000,
        "samples": samples,
    }
    for key, value in out.items():
        if key != "samples":
            print(f"{key:<24} {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
