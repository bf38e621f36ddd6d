"""The shared batching runner: curated topic -> sink, offsets committed only after flush()."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.base.protocols import Sink
from pipeline.errors import BadDataError, DecodeError, RetryableSinkError
from pipeline.kafka import producer_config
from pipeline.settings import Settings
from pipeline.wire.curated import decode_curated
from pipeline.wire.deadletter import Rejected, dlq_headers

log = logging.getLogger(__name__)


BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, float("inf"))


@dataclass
class SinkMetrics:
    """Counters of one runner (hindsight_sink_*_total)."""

    rows_written: int = 0
    batches: int = 0
    retries: int = 0
    retry_waits_s: list[float] = field(default_factory=list)  # the back-off before each retry (last 1000)
    dlq_rows: int = 0
    dlq_messages: int = 0
    # write+flush time of each batch (retries included), as cumulative histogram buckets in seconds
    batch_seconds_sum: float = 0.0
    batch_seconds_buckets: list[int] = field(default_factory=lambda: [0] * len(BATCH_BUCKETS_S))

    def observe_batch(self, seconds: float) -> None:
        self.batch_seconds_sum += seconds
        for i, bound in enumerate(BATCH_BUCKETS_S):
            if seconds <= bound:
                self.batch_seconds_buckets[i] += 1


class SinkRunner:
    """Consumes logs.curated in batches (size or time) and hands them to one sink.

    Retryable errors: pause the partitions, back off exponentially, retry the same batch; nothing
    is committed meanwhile. Bad data: the batch is bisected until the bad rows are isolated, those
    go to logs.dlq with the store's message, the rest is written. Then offsets are committed.
    """

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        group: str | None = None,
        topic: str | None = None,
        decode: Callable[[Message], list[Any]] = lambda msg: decode_curated(msg.value()),
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.topic = topic or settings.curated_topic
        self.decode = decode
        self.metrics = SinkMetrics()
        self.group = group or f"{settings.sink_group}-{sink.name}"
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.max.bytes": 52_428_800,
                "max.poll.interval.ms": 600_000,
            }
        )
        self.producer = Producer(producer_config(settings))
        self._rows: dict[tuple[str, int], list[Any]] = {}
        self._row_count = 0
        self._offsets: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_revoke=self._on_revoke)
        batch_s = self.settings.sink_batch_ms / 1000
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                want = max(1, min(self.settings.sink_batch_rows - self._row_count, 10_000))
                for msg in self.consumer.consume(num_messages=want, timeout=min(batch_s, 0.2)):
                    self._take(msg)
                full = self._row_count >= self.settings.sink_batch_rows
                due = time.monotonic() - started >= batch_s
                if self._offsets and (full or due):
                    self._write_and_commit()
                    started = time.monotonic()
                elif not self._offsets:
                    started = time.monotonic()
            if self._offsets:
                self._write_and_commit()
        finally:
            self.producer.flush(10)
            self.consumer.close()

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error error=%s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        try:
            rows = self.decode(msg)
            self._rows.setdefault((topic, partition), []).extend(rows)
            self._row_count += len(rows)
        except DecodeError as exc:
            self._dead_letter(msg.value() or b"", exc.error_type, exc.detail, topic, partition, offset)
            self.metrics.dlq_messages += 1
        self._offsets[(topic, partition)] = offset + 1

    def _write_and_commit(self) -> None:
        started = time.monotonic()
        rows = [row for rows in self._rows.values() for row in rows]
        self._write(rows)
        if rows:
            self.metrics.observe_batch(time.monotonic() - started)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)
        self._rows = {}
        self._row_count = 0
        self._offsets = {}

    def _write(self, rows: Sequence[Any]) -> None:
        if not rows:
            return
        backoff = 0.2
        paused = False
        while True:
            try:
                self.sink.write_batch(rows)
                self.sink.flush()
                break
            except RetryableSinkError as exc:
                self.metrics.retries += 1
                if not paused:
                    self.consumer.pause(self.consumer.assignment())
                    paused = True
                log.warning("sink unavailable sink=%s retry_in_s=%.1f error=%s", self.sink.name, backoff, exc)
                self.metrics.retry_waits_s.append(backoff)
                del self.metrics.retry_waits_s[:-1000]
                self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.sink_max_backoff_s)
                if self._stop.is_set():
                    raise
            except BadDataError as exc:
                if len(rows) == 1:
                    row = rows[0]
                    self._dead_letter(
                        orjson.dumps(row),
                        "rejected_by_store",
                        str(exc),
                        row["raw_topic"],
                        row["raw_partition"],
                        row["raw_offset"],
                    )
                    self.metrics.dlq_rows += 1
                    break
                mid = len(rows) // 2
                self._write(rows[:mid])
                self._write(rows[mid:])
                return
        if paused:
            self.consumer.resume(self.consumer.assignment())
        self.metrics.rows_written += len(rows)
        self.metrics.batches += 1
        log.debug("batch written sink=%s rows=%s", self.sink.name, len(rows))

    def _sleep(self, seconds: float) -> None:
        # keep serving the group protocol while paused, so the consumer is not thrown out
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            self.consumer.poll(0.1)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Uncommitted rows of revoked partitions are dropped here and re-read by the new owner;
        # the store deduplicates on the raw line id, so at-least-once costs no duplicate rows.
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._row_count -= len(self._rows.pop(key, []))
            self._offsets.pop(key, None)

    def _dead_letter(
        self, payload: bytes, error_type: str, reason: str, topic: str, partition: int, offset: int
    ) -> None:
        log.warning(
            "dead letter stage=sink error_type=%s partition=%s offset=%s", error_type, partition, offset
        )
        rejected = Rejected(error_type, reason, f"sink:{self.sink.name}", payload)
        headers: Any = dlq_headers(rejected, topic, partition, offset)
        self.producer.produce(self.settings.dlq_topic, value=payload, headers=headers)
        self.producer.poll(0)
