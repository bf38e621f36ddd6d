"""Reading logs.raw back by time across all partitions (support captures, rule dry runs, replay)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.errors import ConfigError
from pipeline.kafka import record_time_us
from pipeline.settings import Settings
from pipeline.types import LogRecord
from pipeline.wire.raw import RawDecoder, Where, good_positions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScannedMessage:
    """One raw message of the range, decoded (rejected elements and, with a selection, the lines it
    did not select are left out); `lines` counts the usable lines the message held."""

    partition: int
    offset: int
    records: list[LogRecord]
    indices: list[int]
    lines: int


def scan_raw(
    settings: Settings,
    since_ms: int,
    until_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
    from_offsets: dict[int, int] | None = None,
    on_plan: Callable[[int], None] | None = None,
    where: Where | None = None,
) -> Iterator[ScannedMessage]:
    """Messages of logs.raw whose Kafka timestamp is in [since_ms, until_ms), every partition.

    `from_offsets` (partition -> offset) replaces the start found by time for those partitions;
    `on_plan` is told how many messages the scan will read (for a progress bar's total).

    Start offsets come from offsets_for_times; the end is the high watermark when the scan starts
    (or the offset of until_ms), so a busy topic does not keep the scan going forever.
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.app_id}-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 52_428_800,
        }
    )
    decoder = RawDecoder(settings.max_record_bytes)
    topic = settings.raw_topic
    try:
        meta = consumer.list_topics(topic, timeout=settings.request_timeout_s * 2).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"topic {topic} does not exist")
        parts = sorted(meta.partitions)
        starts = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in parts], timeout=10)
        ends: dict[int, int] = {}
        for p in parts:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        if until_ms is not None:
            for tp in consumer.offsets_for_times(
                [TopicPartition(topic, p, until_ms) for p in parts], timeout=10
            ):
                if tp.offset >= 0:
                    ends[tp.partition] = min(ends[tp.partition], tp.offset)
        assign = []
        for tp in starts:
            start = tp.offset if tp.offset >= 0 else ends[tp.partition]
            if from_offsets and tp.partition in from_offsets:
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
                start = max(from_offsets[tp.partition], low)
            if start < ends[tp.partition]:
                assign.append(TopicPartition(topic, tp.partition, start))
        if on_plan is not None:
            on_plan(sum(ends[tp.partition] - tp.offset for tp in assign))
        pending = {tp.partition for tp in assign}
        if not pending:
            return
        consumer.assign(assign)
        position = {tp.partition: tp.offset for tp in assign}
        idle = 0
        while pending:
            # ask for no more than is left: consume() otherwise waits out its timeout at the end
            left = sum(ends[p] - position[p] for p in pending)
            msgs = consumer.consume(max(1, min(1000, left)), timeout=2.0)
            idle = 0 if msgs else idle + 1
            if idle >= 5:
                log.warning(
                    "raw scan stalled topic=%s partitions=%s; returning what was read", topic, pending
                )
                return
            for msg in msgs:
                err = msg.error()
                partition = msg.partition()
                assert partition is not None
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                    continue
                offset = msg.offset()
                assert offset is not None
                if partition not in pending or offset >= ends[partition]:
                    pending.discard(partition)
                    continue
                position[partition] = offset + 1
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
                if progress is not None:
                    progress(1)
                if where is not None:
                    # lines the selection rejects are never built (nor, on canonical JSON, turned into dicts)
                    kept, positions, lines = decoder.decode_where(msg.value(), where, record_time_us(msg))
                    yield ScannedMessage(partition, offset, kept, positions, lines)
                    continue
                records, errors = decoder.decode(msg.value(), record_time_us(msg))
                if records:
                    yield ScannedMessage(
                        partition, offset, records, good_positions(records, errors), len(records)
                    )
    finally:
        consumer.close()


def earliest_available_ms(settings: Settings) -> int | None:
    """The earliest Kafka time every partition of logs.raw still holds, if retention deleted any data
    (None while nothing was deleted: then any range is complete as far as it goes)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.app_id}-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    topic = settings.raw_topic
    try:
        meta = consumer.list_topics(topic, timeout=settings.request_timeout_s * 2).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"topic {topic} does not exist")
        firsts = []
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if low == 0:
                continue
            if low >= high:
                firsts.append(int(time.time() * 1000))  # everything deleted: nothing older than now
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            msg = consumer.poll(10)
            if msg is not None and msg.error() is None:
                firsts.append(msg.timestamp()[1])
        return max(firsts) if firsts else None
    finally:
        consumer.close()
