"""Rebuilding window state after a restart or rebalance by re-reading logs.raw (the durable buffer)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.settings import Settings

log = logging.getLogger(__name__)


def rebuild_span_ms(settings: Settings) -> int:
    """How far back state reaches: lookback + follow-up + one stats window and its grace, plus margin."""
    return int(
        (settings.lookback_s + settings.follow_s + settings.stats_window_s + settings.stats_grace_s + 10)
        * 1000
    )


def read_back(
    settings: Settings, topic: str, partition: int, before_offset: int, before_ts_ms: int
) -> list[tuple[int, bytes | None]]:
    """Messages of one partition from (before_ts - span) up to, not including, before_offset.

    Found with offsets_for_times, read with a plain consumer (assign, no group): hundreds of
    thousands of messages per second, so this costs seconds even for a busy partition.
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.app_id}-rebuild",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 52_428_800,
        }
    )
    started = time.monotonic()
    try:
        since_ms = max(before_ts_ms - rebuild_span_ms(settings), 0)
        [found] = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)], timeout=10)
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        start = found.offset if found.offset >= 0 else before_offset
        start = max(start, low)
        if start >= before_offset:
            return []
        consumer.assign([TopicPartition(topic, partition, start)])
        out: list[tuple[int, bytes | None]] = []
        done = False
        next_offset = start
        while not done:
            # ask for no more than is left: consume() waits until it has that many or times out
            msgs = consumer.consume(max(1, min(5000, before_offset - next_offset)), timeout=2.0)
            if not msgs:
                break
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done = True
                    continue
                offset = msg.offset()
                assert offset is not None
                if offset >= before_offset:
                    done = True
                    break
                out.append((offset, msg.value()))
                next_offset = offset + 1
        log.info(
            "rebuilt window state topic=%s partition=%s from_offset=%s to_offset=%s messages=%s seconds=%.2f",
            topic,
            partition,
            start,
            before_offset,
            len(out),
            time.monotonic() - started,
        )
        return out
    finally:
        consumer.close()
