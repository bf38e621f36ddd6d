"""Benchmarks: serde and window rates in-process, and worker throughput through Faust on a real broker.

Prints the figures and writes them to bench/results/latest.json. Not part of `make test`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from pipeline.demo import start_child
from pipeline.kafka import ensure_topics
from pipeline.processor import RawProcessor
from pipeline.publisher import Publisher
from pipeline.serde import RawDecoder, RawEncoder
from pipeline.settings import Settings
from pipeline.stack import LocalBroker
from pipeline.workload import generate

RESULTS = Path(__file__).resolve().parent / "results"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_serde(lines: list[Any]) -> dict[str, float]:
    out = {}
    for fmt in ("avro", "json"):
        enc = RawEncoder(fmt)
        batches = [lines[i : i + 40] for i in range(0, len(lines), 40)]
        t = time.perf_counter()
        values = [enc.encode(b) for b in batches]
        out[f"encode_{fmt}_lines_per_s"] = rate(len(lines), time.perf_counter() - t)
        dec = RawDecoder(1 << 22)
        t = time.perf_counter()
        for v in values:
            dec.decode(v)
        out[f"decode_{fmt}_lines_per_s"] = rate(len(lines), time.perf_counter() - t)
        out[f"{fmt}_bytes_per_line"] = sum(map(len, values)) / len(lines)
    return out


def bench_processor(lines: list[Any]) -> dict[str, float]:
    proc = RawProcessor(Settings())
    values = [RawEncoder("avro").encode(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    t = time.perf_counter()
    for offset, v in enumerate(values):
        proc.handle("logs.raw", 0, offset, v)
    return {"processor_lines_per_s": rate(len(lines), time.perf_counter() - t)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_worker(base: Settings, lines: list[Any]) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "raw_topic": f"bench.{run}.raw",
            "curated_topic": f"bench.{run}.curated",
            "dlq_topic": f"bench.{run}.dlq",
            "rules_topic": f"bench.{run}.rules",
            "stats_topic": f"bench.{run}.stats",
            "app_id": f"bench-{run}",
            "publish_linger_ms": 1000,
            "publish_batch_lines": 40,
        }
    )
    ensure_topics(settings)
    pub = Publisher(settings)
    t = time.perf_counter()
    for rec in tqdm(lines, desc="publishing", unit="line", file=sys.stderr, mininterval=0.5):
        pub.publish(rec)
    pub.flush(60)
    publish_s = time.perf_counter() - t
    messages = pub.metrics.messages
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id})
    parts = [TopicPartition(settings.raw_topic, p) for p in range(settings.partitions)]
    end = sum(consumer.get_watermark_offsets(tp)[1] for tp in parts)
    child = start_child("worker", ["worker"], settings, settings.home / "bench-logs")
    first = done = None
    bar = tqdm(total=end, desc="worker", unit="msg", file=sys.stderr, mininterval=0.5)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            child.check()
            got = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
            bar.update(got - bar.n)
            now = time.perf_counter()
            if got and first is None:
                first = (now, got)
            if got >= end:
                done = now
                break
            time.sleep(0.1)
    finally:
        bar.close()
        child.stop()
        consumer.close()
    if first is None or done is None:
        raise SystemExit("worker did not finish")
    msgs = end - first[1]
    span = done - first[0]
    per_line = len(lines) / messages
    return {
        "publish_lines_per_s": rate(len(lines), publish_s),
        "raw_messages": messages,
        "lines_per_message": per_line,
        "worker_messages_per_s": rate(msgs, span),
        "worker_lines_per_s": rate(msgs, span) * per_line,
    }


def main() -> None:
    n = int(os.environ.get("BENCH_LINES", "200000"))
    work = generate(sessions=max(n // 40, 1), requests_per_session=2, seed=3)
    lines = work.lines[:n]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "lines": len(lines),
    }
    results.update(bench_serde(lines))
    results.update(bench_processor(lines))
    base = Settings(home=Path(".hindsight/bench"), cache_dir=Path(".hindsight/cache"))
    broker = None
    if base.local_broker:
        base = base.model_copy(update={"kafka_port": free_port()})
        broker = LocalBroker(base)
        broker.start()
    try:
        results.update(bench_worker(base, lines))
    finally:
        if broker is not None:
            broker.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:<28} {value:,.1f}" if isinstance(value, float) else f"{key:<28} {value}")


if __name__ == "__main__":
    main()
