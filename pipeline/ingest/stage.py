"""What ingest does to a batch of raw messages, without Kafka I/O: decode any shape, stamp each line
with its origin, route it to the partition of its session (the Java client's murmur2, as the project's
publisher and Kafka Streams would), cut each partition's lines into canonical batches, and collect
what could not be used for the dead-letter topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

from pipeline.types import session_key
from pipeline.wire.deadletter import Rejected, rejections
from pipeline.wire.raw import RawDecoder, batch_elements, good_positions
from pipeline.wire.sessions import encode_sessions


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A logs.raw record as ingest sees it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    value: bytes | None
    key: bytes | None = None


@dataclass
class Routed:
    """What one batch of raw messages becomes."""

    values: dict[int, list[bytes]] = field(default_factory=dict)  # canonical partition -> values, in order
    rejected: list[tuple[RawMessage, Rejected]] = field(default_factory=list)
    lines: int = 0


class SessionPartitioner:
    """A session key's partition: murmur2 as the Java client's default partitioner (cached: sessions
    repeat, and the pure-Python hash costs a few microseconds)."""

    def __init__(self, partitions: int, cache: int = 200_000) -> None:
        self.partitions = partitions
        self.cache = cache
        self._of: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        part = self._of.get(key)
        if part is None:
            if len(self._of) >= self.cache:
                self._of.clear()
            part = self._of[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
        return part


class IngestStage:
    """Decodes and routes raw messages (one instance per ingest process; it keeps only counters)."""

    def __init__(self, decoder: RawDecoder, partitions: int, max_lines_per_message: int = 1000) -> None:
        self.decoder = decoder
        self.partition_of = SessionPartitioner(partitions)
        self.max_lines = max_lines_per_message
        self.lines_in = 0
        self.lines_out = 0
        self.messages_in = 0
        self.dlq_by_type: dict[str, int] = {}

    def route(self, messages: Iterable[RawMessage]) -> Routed:
        out = Routed()
        pending: dict[int, list[dict[str, Any]]] = {}
        decode = self.decoder.decode
        partition_of = self.partition_of
        for msg in messages:
            self.messages_in += 1
            ts_us = msg.timestamp_ms * 1000 if msg.timestamp_ms and msg.timestamp_ms > 0 else None
            records, errors = decode(msg.value, ts_us)
            if errors:
                elements = batch_elements(msg.value) if any(i is not None for i, _ in errors) else []
                for rej in rejections(msg.value, errors, "decode", elements):  # the stage name of before
                    out.rejected.append((msg, rej))
                    self.dlq_by_type[rej.error_type] = self.dlq_by_type.get(rej.error_type, 0) + 1
            positions = good_positions(records, errors) if errors else range(len(records))
            for rec, index in zip(records, positions, strict=True):
                line: dict[str, Any] = rec  # type: ignore[assignment]
                line["raw_topic"] = msg.topic
                line["raw_partition"] = msg.partition
                line["raw_offset"] = msg.offset
                line["raw_index"] = index
                part = partition_of(rec["session_id"] or session_key(rec))
                batch = pending.get(part)
                if batch is None:
                    batch = pending[part] = []
                batch.append(line)
                if len(batch) >= self.max_lines:
                    out.values.setdefault(part, []).append(_encode(batch))
                    out.lines += len(batch)
                    pending[part] = []
        for part, batch in pending.items():
            if batch:
                out.values.setdefault(part, []).append(_encode(batch))
                out.lines += len(batch)
        self.lines_in += out.lines + len(out.rejected)
        self.lines_out += out.lines
        return out


def _timestamp(line: dict[str, Any]) -> int:
    return int(line["timestamp"])


def _encode(batch: list[dict[str, Any]]) -> bytes:
    """One canonical message, its lines in event-time order: the lines of one poll come partition by
    partition, and the worker's windows want them as they happened. Only within a message: across
    messages each raw partition's lines stay in offset order, which the worker's dedup relies on."""
    batch.sort(key=_timestamp)
    return encode_sessions(batch)
