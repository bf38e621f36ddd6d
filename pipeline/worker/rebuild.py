"""Rebuilding window state after a restart or rebalance by re-reading logs.sessions (the durable buffer)."""

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


class RebuildError(RuntimeError):
    """A partition's past could not be read up to where its live messages start."""


def read_back(
    settings: Settings,
    topic: str,
    partition: int,
    before_offset: int,
    before_ts_ms: int,
    timeout_s: float = 120.0,
) -> list[tuple[int, bytes | None]]:
    """Messages of one partition from (before_ts - span) up to, not including, before_offset: all of
    them (empty polls are retried), or RebuildError after `timeout_s`.

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
        next_offset = start
        deadline = time.monotonic() + timeout_s
        while next_offset < before_offset:
            # ask for no more than is left: consume() waits until it has that many or times out
            msgs = consumer.consume(max(1, min(5000, before_offset - next_offset)), timeout=2.0)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # at the end: done if the end is past before_offset (offsets may have gaps)
                        end = msg.offset()
                        if end is not None and end >= before_offset:
                            next_offset = before_offset
                    else:
                        log.warning(
                            "rebuild read error topic=%s partition=%s error=%s", topic, partition, err
                        )
                    continue
                offset = msg.offset()
                assert offset is not None
                if offset >= before_offset:
                    next_offset = before_offset
                    break
                out.append((offset, msg.value()))
                next_offset = offset + 1
            if next_offset >= before_offset:
                break
            if not msgs or all(m.error() is not None for m in msgs):
                # The messages below before_offset exist (the caller holds the one at it): an empty
                # poll is a slow broker or a leader move, not the end. Stopping here would rebuild a
                # partial state and silently lose the lookback of what was not read.
                if time.monotonic() > deadline:
                    raise RebuildError(
                        f"rebuild of {topic}[{partition}] reached offset {next_offset} of {before_offset} "
                        f"in {timeout_s:.0f} s; the worker stops rather than run with partial state"
                    )
                log.warning(
                    "rebuild read stalled, retrying topic=%s partition=%s at=%s until=%s",
                    topic,
                    partition,
                    next_offset,
                    before_offset,
                )
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
