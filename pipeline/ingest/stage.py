"""What ingest does to a batch of raw messages, without Kafka I/O: decode any shape, note each line's
origin, route it to the partition of its session (the Java client's murmur2, as the project's
publisher and Kafka Streams would), cut each partition's lines into canonical batches, and collect
what could not be used for the dead-letter topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from pipeline.engine.templates import Templates
from pipeline.types import FLAG_SECURITY, FLAG_TIMEOUT, session_key
from pipeline.wire.deadletter import Rejected, rejections
from pipeline.wire.frames import FramedLine, encode_framed
from pipeline.wire.raw import RawDecoder, batch_elements, canonical_object, good_positions


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ cost ~1.2 us more per message (~7%)
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

    def __init__(
        self,
        decoder: RawDecoder,
        partitions: int,
        max_lines_per_message: int = 1000,
        timeout_attribute: str = "timeout",
    ) -> None:
        """`timeout_attribute`: the attribute the worker's timeout trigger reads (the frame's flags say
        which lines have it; a worker configured otherwise decodes the lines instead)."""
        self.decoder = decoder
        self.timeout_attribute = timeout_attribute
        self.partition_of = SessionPartitioner(partitions)
        self.templates = Templates()  # each line's template id, for the worker's novelty trigger
        self.max_lines = max_lines_per_message
        self.lines_in = 0
        self.lines_out = 0
        self.messages_in = 0
        self.dlq_by_type: dict[str, int] = {}

    def route(self, messages: Iterable[RawMessage]) -> Routed:
        out = Routed()
        pending: dict[int, list[FramedLine]] = {}  # partition -> its lines, with their columns
        decoder = self.decoder
        max_bytes = decoder.max_bytes
        partition_of = self.partition_of
        templates = self.templates
        attribute = self.timeout_attribute
        fast = 0
        for msg in messages:
            self.messages_in += 1
            ts_us = msg.timestamp_ms * 1000 if msg.timestamp_ms and msg.timestamp_ms > 0 else None
            value = msg.value
            # Fast path: one canonical JSON object (kcat, most shippers' canonical output), validated
            # in C and passed on as the bytes it came in.
            item = canonical_object(value) if value and len(value) <= max_bytes else None
            if value and item is not None and (item.observed_timestamp or _OBSERVED not in value):
                observed = None if item.observed_timestamp is not None else ts_us or item.timestamp
                message = item.message
                tid = templates.id_of(message)  # stateless per-line work: here, not in the worker
                key = _session_key(item)
                part = partition_of(key)
                batch = pending.get(part)
                if batch is None:
                    batch = pending[part] = []
                attrs = item.attributes
                flags = (FLAG_SECURITY if item.security_flags else 0) | (
                    FLAG_TIMEOUT if attrs and attribute in attrs else 0
                )
                # the value goes on as it came: its origin, template and observed time are columns
                batch.append((key, item.timestamp, item.level, item.service, item.endpoint, item.user_id,
                              item.latency_ms, item.status_code, flags, tid, len(message), msg.topic,
                              msg.partition, msg.offset, 0, observed, value))  # fmt: skip
                fast += 1
                if len(batch) >= self.max_lines:
                    self._flush(out, part, batch)
                    pending[part] = []
                continue
            records, errors = decoder.decode(value, ts_us)
            if errors:
                elements = batch_elements(value) if any(i is not None for i, _ in errors) else []
                for rej in rejections(value, errors, "decode", elements):  # the stage name of before
                    out.rejected.append((msg, rej))
                    self.dlq_by_type[rej.error_type] = self.dlq_by_type.get(rej.error_type, 0) + 1
            positions = good_positions(records, errors) if errors else range(len(records))
            for rec, index in zip(records, positions, strict=True):
                tid = templates.id_of(rec["message"])
                key = rec["session_id"] or session_key(rec)
                part = partition_of(key)
                batch = pending.get(part)
                if batch is None:
                    batch = pending[part] = []
                attributes = rec.get("attributes")
                flags = (FLAG_SECURITY if rec.get("security_flags") else 0) | (
                    FLAG_TIMEOUT if attributes and attribute in attributes else 0
                )
                batch.append((key, rec["timestamp"], rec["level"], rec.get("service") or "",
                              rec.get("endpoint"), rec.get("user_id"), rec.get("latency_ms"),
                              rec.get("status_code"), flags, tid, len(rec["message"]), msg.topic,
                              msg.partition, msg.offset, index, None, orjson.dumps(rec)))  # fmt: skip
                if len(batch) >= self.max_lines:
                    self._flush(out, part, batch)
                    pending[part] = []
        for part, batch in pending.items():
            if batch:
                self._flush(out, part, batch)
        if fast:
            decoder.shapes["canonical"] = decoder.shapes.get("canonical", 0) + fast
        self.lines_in += out.lines + len(out.rejected)
        self.lines_out += out.lines
        return out

    def _flush(self, out: Routed, part: int, batch: list[FramedLine]) -> None:
        """One canonical message, framed with its columns (encode_framed), its lines in event-time
        order within each session: the lines of one poll come partition by partition, and the worker's
        windows want them as they happened. Only within a message: across messages each raw
        partition's lines stay in offset order, which the worker's dedup relies on."""
        batch.sort(key=_time)
        out.values.setdefault(part, []).append(encode_framed(batch, self.timeout_attribute))
        out.lines += len(batch)


_OBSERVED = b'"observed_timestamp"'  # present but null: the slow path fills it (no duplicate key)


def _time(line: FramedLine) -> int:
    return line[1]


def _session_key(item: Any) -> str:
    """session_key() of a canonical struct: session, else transaction, else user, else service."""
    if item.session_id:
        return str(item.session_id)
    if item.transaction_id:
        return f"tx:{item.transaction_id}"
    if item.user_id:
        return f"user:{item.user_id}"
    return f"svc:{item.service}"
