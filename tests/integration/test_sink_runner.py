"""The batching runner on the real broker: commit only after flush, back off, dead-letter bad rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from connectors.base.runner import SinkRunner
from pipeline.engine.curate import curate
from pipeline.errors import BadDataError, RetryableSinkError
from pipeline.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.types import CuratedRecord, RawLine
from pipeline.wire.curated import encode_curated
from pipeline.wire.records import normalize

from .helpers import consume_all, eventually, group_partitions

pytestmark = pytest.mark.integration
NOW = 1_790_000_000_000_000


class FlakySink:
    """A sink double: unavailable for the first `failures` flushes, rejects rows whose message says so."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.pending: list[CuratedRecord] = []
        self.written: list[CuratedRecord] = []
        self.flush_calls = 0

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        self.pending.extend(rows)

    def flush(self) -> None:
        self.flush_calls += 1
        rows, self.pending = self.pending, []
        if self.failures > 0:
            self.failures -= 1
            raise RetryableSinkError("store down")
        if any(r["message"] == "poison" for r in rows):
            raise BadDataError("Code: 27. cannot parse poison")
        self.written.extend(rows)

    def close(self) -> None:
        pass


def produce_curated(
    settings: Settings,
    messages: int,
    per_message: int,
    poison_at: int | None = None,
    first: int = 0,
    poison: str = "poison",
) -> None:
    """`messages` curated messages of `per_message` lines each: line n (from `first`) is raw offset n,
    message "line n", in session s<message index>."""
    producer = Producer(settings.kafka_client_config())
    n = first
    for m in range(messages):
        batch = []
        for _ in range(per_message):
            msg = poison if n == poison_at else f"line {n}"
            line = RawLine(
                normalize(
                    {
                        "timestamp": NOW + n,
                        "service": "s",
                        "level": "ERROR",
                        "message": msg,
                        "session_id": f"s{m}",
                    }
                ),
                "logs.raw",
                0,
                n,
            )
            batch.append(curate(line, ["error"], line, 30))
            n += 1
        producer.produce(settings.curated_topic, value=encode_curated(batch), key=f"s{m}".encode())
    assert producer.flush(10) == 0


def committed(settings: Settings, group: str) -> int:
    """Offsets of logs.curated the group committed, summed. A retriable error (the group's coordinator
    still being elected) is retried, never read as "nothing committed"."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": group})
    parts = [TopicPartition(settings.curated_topic, p) for p in range(settings.partitions)]
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def run_in_thread(runner: SinkRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def test_offsets_committed_only_after_a_successful_flush(ns: Settings) -> None:
    settings = ns.model_copy(update={"sink_batch_ms": 200, "sink_max_backoff_s": 0.5})
    ensure_topics(settings)
    produce_curated(settings, messages=20, per_message=5)
    sink = FlakySink(failures=4)
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: sink.flush_calls >= 2, 30, "the first failing flushes")
        assert committed(settings, runner.group) == 0  # the store is down: nothing committed
        eventually(lambda: len(sink.written) >= 100 or None, 30, "rows written after the store recovers")
        eventually(lambda: committed(settings, runner.group) == 20 or None, 10, "offsets committed")
    finally:
        runner.stop()
        thread.join(15)
    assert sorted(r["message"] for r in sink.written) == sorted(f"line {i}" for i in range(100))
    assert runner.metrics.retries == 4


def test_rows_the_store_rejects_go_to_dlq_and_the_rest_is_written(ns: Settings) -> None:
    settings = ns.model_copy(update={"sink_batch_ms": 200})
    ensure_topics(settings)
    produce_curated(settings, messages=4, per_message=8, poison_at=13)
    sink = FlakySink(failures=0)
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: len(sink.written) >= 31 or None, 30, "good rows written")
        eventually(lambda: committed(settings, runner.group) == 4 or None, 10, "offsets committed")
    finally:
        runner.stop()
        thread.join(15)
    assert len(sink.written) == 31 and all(r["message"] != "poison" for r in sink.written)
    [dead] = consume_all(settings, settings.dlq_topic, expect=1)
    headers = dict(dead.headers())
    assert headers["hindsight.stage"] == b"sink:flaky"
    assert headers["hindsight.error_type"] == b"rejected_by_store"
    assert b"cannot parse poison" in headers["hindsight.reason"]
    assert runner.metrics.dlq_rows == 1


def test_undecodable_curated_message_is_dead_lettered(ns: Settings) -> None:
    settings = ns.model_copy(update={"sink_batch_ms": 200})
    ensure_topics(settings)
    producer = Producer(settings.kafka_client_config())
    producer.produce(settings.curated_topic, value=b"\x00garbage")
    assert producer.flush(10) == 0
    produce_curated(settings, messages=1, per_message=2)
    sink = FlakySink(failures=0)
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: len(sink.written) >= 2 or None, 30, "valid rows")
        eventually(lambda: runner.metrics.dlq_messages or None, 30, "the undecodable message dead-lettered")
    finally:
        runner.stop()
        thread.join(15)
    [dead] = consume_all(settings, settings.dlq_topic, expect=1)
    assert dict(dead.headers())["hindsight.stage"] == b"sink:flaky"
    assert runner.metrics.dlq_messages == 1


def split_between_two(settings: Settings, group: str) -> list[list[int]] | None:
    """logs.curated partitions per member of `group`, once stable with two members owning some."""
    owned = group_partitions(settings, group, settings.curated_topic)
    return sorted(owned.values()) if owned is not None and len(owned) == 2 and all(owned.values()) else None


class SlowSink:
    """Records what it stored; each flush takes `delay_s`, so a rebalance finds rows not yet flushed."""

    name = "slow"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.pending: list[CuratedRecord] = []
        self.written: list[CuratedRecord] = []

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        self.pending.extend(rows)

    def flush(self) -> None:
        time.sleep(self.delay_s)
        rows, self.pending = self.pending, []
        self.written.extend(rows)

    def close(self) -> None:
        pass


def test_two_sinks_in_one_group_share_the_partitions_and_lose_nothing(ns: Settings) -> None:
    """A second sink joins the group while the first is storing (slowly): the partitions are split,
    rows the first had not flushed when its partitions were revoked are dropped there and re-read by
    their new owner, so together they store every raw line (any stored twice is absorbed by the
    stores' raw-id keys; the count is printed) and the group commits everything."""
    settings = ns.model_copy(update={"partitions": 4, "sink_batch_ms": 300})
    ensure_topics(settings)
    produce_curated(settings, messages=40, per_message=5)  # 200 lines over 40 sessions, 4 partitions
    first, second = SlowSink(2.0), SlowSink(0.0)
    runner1 = SinkRunner(settings, first)
    thread1 = run_in_thread(runner1)
    runner2 = SinkRunner(settings, second)
    thread2: threading.Thread | None = None
    try:
        eventually(lambda: first.written or None, 60, "the first sink storing")
        thread2 = run_in_thread(runner2)
        # asked of the broker: the consumer itself belongs to its runner's thread
        split = eventually(lambda: split_between_two(settings, runner1.group), 60, "the group splitting")
        print(f"the group's partitions per member: {split}")
        produce_curated(settings, messages=40, per_message=5, first=200)  # to both owners
        eventually(lambda: committed(settings, runner1.group) == 80 or None, 90, "both sinks committing all")
        eventually(lambda: second.written or None, 30, "the second sink storing its share")
    finally:
        runner1.stop()
        runner2.stop()
        thread1.join(15)
        if thread2 is not None:
            thread2.join(15)
    ids = [r["raw_offset"] for r in (*first.written, *second.written)]
    again = len(ids) - len(set(ids))
    print(
        f"first stored {len(first.written)}, second {len(second.written)}, {again} twice after the rebalance"
    )
    assert set(ids) == set(range(400))
