"""Helpers for tests against the real broker: consuming a topic, running pipeline processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Consumer, Message, TopicPartition

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


def chain_lag(settings: Settings, sinks: tuple[str, ...] = ("clickhouse",)) -> dict[str, int]:
    """What each stage of the pipeline has not committed yet: ingest on logs.raw, the worker on
    logs.sessions, each sink on logs.curated (messages; a group that never committed counts all)."""
    from pipeline.kafka import group_lag

    stages = {
        "ingest": (settings.ingest_group, settings.raw_topic),
        "worker": (settings.app_id, settings.sessions_topic),
        **{f"sink {name}": (f"{settings.sink_group}-{name}", settings.curated_topic) for name in sinks},
    }
    return {
        stage: sum(group_lag(settings, group, topic).values()) for stage, (group, topic) in stages.items()
    }


def topic_ends(settings: Settings, topic: str) -> list[int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in sorted(meta.partitions)
        ]
    finally:
        consumer.close()


def wait_drained(settings: Settings, timeout_s: float, sinks: tuple[str, ...] = ("clickhouse",)) -> None:
    """Until nothing more can reach the store: every stage committed everything before it (a sink
    commits only after its rows were written, the worker only after curated was flushed) and
    logs.curated did not grow between two such observations (what a worker emits on its own, from
    the shared-state log or its tick, has landed too). Replaces "sleep, anything extra would arrive
    now" before an exact comparison: the wait is as long as the pipeline needs, and says why it
    timed out."""
    deadline = time.monotonic() + timeout_s
    last: tuple[dict[str, int], list[int]] | None = None
    seen_ends: list[int] | None = None
    while time.monotonic() < deadline:
        lags = chain_lag(settings, sinks)
        ends = topic_ends(settings, settings.curated_topic)
        last = (lags, ends)
        if not any(lags.values()):
            if ends == seen_ends:
                return
            seen_ends = ends
        else:
            seen_ends = None
        time.sleep(0.5)
    raise AssertionError(
        f"the pipeline did not drain within {timeout_s:.0f} s (lag per stage, curated ends): {last}"
    )
