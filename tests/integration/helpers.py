"""Helpers for tests against the real broker: consuming a topic, running pipeline processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, Message

from pipeline.kafka import ensure_topics
from pipeline.ops.demo import Child, start_child, wait_until
from pipeline.settings import Settings
from pipeline.store.client import query_api, remote_summary

T = TypeVar("T")


def consume_all(settings: Settings, topic: str, expect: int, timeout: float = 20.0) -> list[Message]:
    """Read a topic from the start until `expect` messages arrived (or timeout)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
        # a little longer, to notice extras
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def eventually(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextmanager
def pipeline_running(
    settings: Settings,
    log_dir: Path,
    worker_args: tuple[str, ...] = (),
    sink_args: tuple[str, ...] = (),
    ingest_args: tuple[str, ...] = (),
) -> Iterator[list[Child]]:
    """Worker, ClickHouse sink and ingest (in that order) as real processes; stopped (SIGTERM) afterwards."""
    ensure_topics(settings)
    children = [
        start_child("worker", ["--log-level", "INFO", "worker", *worker_args], settings, log_dir),
        start_child("sink", ["--log-level", "INFO", "sink", "clickhouse", *sink_args], settings, log_dir),
        start_child("ingest", ["--log-level", "INFO", "ingest", *ingest_args], settings, log_dir),
    ]
    try:
        wait_until("query API", lambda: remote_summary(query_api(settings), 2) is not None, 90, children)
        yield children
    finally:
        for child in reversed(children):
            child.stop()


def group_partitions(settings: Settings, group: str, topic: str) -> dict[str, list[int]] | None:
    """Partitions of `topic` per member of consumer group `group`, asked of the broker (a consumer
    belongs to its own thread); None unless the group exists and is stable."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config())
    try:
        described = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    except KafkaException:  # the group does not exist yet
        return None
    if not str(described.state).endswith("STABLE"):
        return None
    return {
        m.member_id: sorted(
            tp.partition
            for tp in (m.assignment.topic_partitions if m.assignment else [])
            if tp.topic == topic
        )
        for m in described.members
    }
