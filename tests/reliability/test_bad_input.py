"""10k malformed records interleaved with valid ones, through running ingest and worker processes on the
real broker: each malformed record reaches logs.dlq with its reason, each valid line is processed, both
keep running and their memory stays bounded."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from pipeline.kafka import ensure_topics
from pipeline.ops.demo import start_child
from pipeline.settings import Settings
from pipeline.wire.curated import decode_curated
from pipeline.wire.raw import RawEncoder

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
MALFORMED = 10_000


def malformed(rng: random.Random, now_us: int, i: int) -> tuple[bytes, str]:
    """One bad record of a kind, and the error type the worker must give it."""
    good = {
        "timestamp": now_us,
        "service": "s",
        "level": "INFO",
        "message": f"bad {i}",
        "session_id": f"b{i}",
    }
    kind = i % 8
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) + b"\xff", "*"
    if kind == 1:
        return RawEncoder("avro").encode([good])[: rng.randint(11, 20)], "bad_avro"
    if kind == 2:
        return orjson.dumps({**good, "service": 42}), "wrong_type"
    if kind == 3:
        return b'{"service": "s", "level": "INFO", "message": "\xff\xfe"}', "invalid_utf8"
    if kind == 4:
        return b"[" * 5000 + b"]" * 5000, "*"  # deeply nested JSON
    if kind == 5:
        return orjson.dumps({**good, "timestamp": 4_200_000_000_000_000}), "bad_timestamp"  # year 2103
    if kind == 6:
        return orjson.dumps({**good, "timestamp": 315_532_800_000_000}), "bad_timestamp"  # 1980
    return orjson.dumps({**good, "level": "LOUD"}), "wrong_type"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_malformed_records_are_dead_lettered_valid_ones_processed_worker_survives(
    ns: Settings, tmp_path: Path
) -> None:
    settings = ns.model_copy(update={"partitions": 2})
    ensure_topics(settings)
    rng = random.Random(17)
    now_us = time.time_ns() // 1000
    producer = Producer({**settings.kafka_client_config(), "message.max.bytes": 4_000_000, "linger.ms": 20})
    expected: dict[str, str] = {}
    valid: set[str] = set()
    huge = orjson.dumps({"timestamp": now_us, "service": "s", "level": "INFO", "message": "x" * 1_500_000})
    for i in range(MALFORMED):
        key = f"bad-{i}"
        value, error_type = (huge, "too_large") if i == 4999 else malformed(rng, now_us, i)
        producer.produce(settings.raw_topic, value=value, key=key.encode())
        expected[key] = error_type
        if i % 10 == 0:
            message = f"valid {i} {uuid.uuid4().hex[:6]}"
            obj = {
                "timestamp": now_us + i,
                "service": "s",
                "level": "WARN",
                "message": message,
                "session_id": f"v{i}",
            }
            producer.produce(settings.raw_topic, value=orjson.dumps(obj), key=f"v{i}".encode())
            valid.add(message)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    worker = start_child("worker", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs")
    ingest = start_child("ingest", ["--log-level", "INFO", "ingest"], settings, tmp_path / "logs")
    try:
        consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"r-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([settings.dlq_topic, settings.curated_topic])
        dead: dict[str, dict[str, str]] = {}
        kept: set[str] = set()
        peak = 0
        deadline = time.monotonic() + 240
        while (len(dead) < MALFORMED or not valid <= kept) and time.monotonic() < deadline:
            worker.check()  # fails the test if the worker died
            ingest.check()  # or ingest, which dead-letters what it cannot use
            peak = max(peak, rss_kb(worker.proc.pid), rss_kb(ingest.proc.pid))
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                if msg.topic() == settings.dlq_topic:
                    headers = {k: v.decode() for k, v in msg.headers() or []}
                    dead[(msg.key() or b"").decode()] = headers
                else:
                    kept.update(r["message"] for r in decode_curated(msg.value()))
        consumer.close()
        worker.check()
        ingest.check()
    finally:
        ingest.stop()
        worker.stop()
    assert set(dead) == set(expected), f"{len(dead)} of {MALFORMED} dead-lettered"
    wrong: dict[str, Any] = {
        k: (dead[k]["hindsight.error_type"], want)
        for k, want in expected.items()
        if want != "*" and dead[k]["hindsight.error_type"] != want
    }
    assert not wrong, list(wrong.items())[:5]
    assert all(h["hindsight.reason"] and h["hindsight.source_offset"] for h in dead.values())
    assert valid <= kept  # every valid WARN line was processed and forwarded
    assert peak < 600_000, f"worker RSS peaked at {peak} KB"
