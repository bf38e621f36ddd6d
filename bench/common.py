"""What the benchmark scripts share: a free port, and a broker of their own (or KAFKA_BOOTSTRAP_SERVERS)."""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError

from pipeline.ingest.service import FETCH_CONFIG
from pipeline.ops.stack import LocalBroker
from pipeline.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bench_broker() -> Iterator[Settings]:
    """Settings pointing at a single-node broker started for this benchmark on a free port (stopped
    afterwards), or at the cluster KAFKA_BOOTSTRAP_SERVERS names."""
    base = Settings(home=Path(".hindsight/bench"), cache_dir=Path(".hindsight/cache"))
    broker = None
    if base.local_broker:
        base = base.model_copy(update={"kafka_port": free_port()})
        broker = LocalBroker(base)
        broker.start()
    try:
        yield base
    finally:
        if broker is not None:
            broker.stop()


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def consume_rate(
    settings: Settings, topic: str, expect: int, group: str, decode: Callable[[bytes], object] = orjson.loads
) -> float:
    """Messages/s of a plain confluent-kafka consumer that reads a topic from the start and decodes
    each value: the limit a pipeline stage is measured against."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            **FETCH_CONFIG,  # fetches as large as ingest's: the limit is the best a plain consumer does
        }
    )
    consumer.subscribe([topic])
    got = eof = 0
    started = None
    while got < expect and eof < settings.partitions:
        for msg in consumer.consume(10_000, timeout=1.0):
            error = msg.error()
            if error is not None:
                eof += error.code() == KafkaError._PARTITION_EOF
                continue
            started = started or time.perf_counter()
            decode(msg.value() or b"[]")
            got += 1
    consumer.close()
    elapsed = time.perf_counter() - (started or time.perf_counter())
    return got / elapsed if elapsed > 0 else float("inf")
