"""What ingest does to a batch of raw messages, without Kafka I/O: decode any shape, note each line's
origin, route it to the partition of its session (the Java client's murmur2, as the project's
publisher and Kafka Streams would), cut each partition's lines into canonical batches, and collect
what could not be used for the dead-letter topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, Protocol

import orjson
from aiokafka.partitioner import murmur2

from pipeline import compiled
from pipeline.engine.templates import Templates
from pipeline.types import FLAG_SECURITY, FLAG_TIMEOUT, session_key
from pipeline.wire.deadletter import Rejected, rejections
from pipeline.wire.frames import FramedLine, encode_framed
from pipeline.wire.raw import (
    CANONICAL_DECLINED,
    CANONICAL_OBJECT,
    CANONICAL_TYPE,
    RawDecoder,
    batch_elements,
    canonical_object,
    good_positions,
)


class RawRecord(Protocol):
    """A logs.raw record as ingest reads it: what confluent-kafka's Message offers (read in place; a
    copy of its six fields per message cost ~1.3 us, a sixth of ingest's time per line)."""

    def error(self) -> Any: ...
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def timestamp(self) -> tuple[int, int]: ...
    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...


class RawMessage:
    """A RawRecord built by hand (tests, benchmarks, tools that read logs.raw another way)."""

    __slots__ = ("_key", "_offset", "_partition", "_timestamp_ms", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        value: bytes | None,
        key: bytes | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._timestamp_ms, self._value, self._key = timestamp_ms, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        """(1, ms) as Kafka's CreateTime, or (0, -1): no timestamp (as confluent-kafka reports it)."""
        return (1, self._timestamp_ms) if self._timestamp_ms is not None else (0, -1)

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key


@dataclass
class Routed:
    """What one batch of raw messages becomes."""

    values: dict[int, list[bytes]] = field(default_factory=dict)  # canonical partition -> values, in order
    rejected: list[tuple[RawRecord, Rejected]] = field(default_factory=list)
    lines: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # raw partition -> next offset
    starts: dict[tuple[str, int], int] = field(default_factory=dict)  # raw partition -> first offset
    errors: list[Any] = field(default_factory=list)  # what consume() reported instead of a message


class SessionPartitioner:
    """A session key's partition: murmur2 as the Java client's default partitioner (cached: sessions
    repeat, and the pure-Python hash costs a few microseconds)."""

    def __init__(self, partitions: int, cache: int = 200_000) -> None:
        self.partitions = partitions
        self.cache = cache
        # the keys seen: the stage's loop looks a key up here before it calls (a call costs ~0.3 us)
        self.known: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        part = self.known.get(key)
        if part is None:
            if len(self.known) >= self.cache:
                self.known.clear()
            part = self.known[key] = (_murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
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

    def route(self, messages: Iterable[RawRecord]) -> Routed:
        """Decode, route and frame a poll's messages; each raw partition's first and next offsets in
        `positions` and `starts`, the error events among them in `errors`. The per-line loop runs in
        C when it is built (_route.c: the same steps, framing included, ~2.6 us a line against ~3.6 us
        here on 200k consumed single-line canonical messages), else in _route_py; both call _slow for
        the other shapes."""
        out = Routed()
        pending: dict[int, list[FramedLine]] = {}  # partition -> its lines, with their columns
        if _native is not None and isinstance(messages, list | tuple):
            ctx = (
                CANONICAL_OBJECT.decode,
                CANONICAL_DECLINED,
                self.partition_of.known,
                self.partition_of,
                self.templates.id_of,
                _session_key,
                partial(self._slow, out, pending),
                partial(self._flush, out),
                self.max_lines,
                self.decoder.max_bytes,
                self.timeout_attribute,
                _OBSERVED,
                CANONICAL_TYPE,
            )
            count, fast = _native.route(messages, ctx, pending, out.positions, out.starts, out.errors)
        else:
            count, fast = self._route_py(messages, out, pending)
        for part, batch in pending.items():
            if batch:
                self._flush(out, part, batch)
        if fast:
            shapes = self.decoder.shapes
            shapes["canonical"] = shapes.get("canonical", 0) + fast
        self.messages_in += count
        self.lines_in += out.lines + len(out.rejected)
        self.lines_out += out.lines
        return out

    def _route_py(
        self, messages: Iterable[RawRecord], out: Routed, pending: dict[int, list[FramedLine]]
    ) -> tuple[int, int]:
        """route's per-line loop in Python (what _route.c does, step by step): (messages, fast lines)."""
        max_bytes = self.decoder.max_bytes
        max_lines = self.max_lines
        partition_of = self.partition_of
        known = partition_of.known.get
        id_of = self.templates.id_of
        attribute = self.timeout_attribute
        positions, starts = out.positions, out.starts
        topic: str | None = None
        partition = offset = -1
        fast = count = 0
        for msg in messages:
            if msg.error() is not None:
                out.errors.append(msg.error())
                continue
            count += 1
            t, p, o = msg.topic(), msg.partition(), msg.offset()
            if p != partition or t != topic:
                # consume() hands out runs of one partition: note the offsets where a run starts and ends
                if topic is not None:
                    positions[(topic, partition)] = offset + 1
                starts.setdefault((t, p), o)
                topic, partition = t, p
            offset = o
            kind, stamp = msg.timestamp()
            ts_us = stamp * 1000 if kind and stamp > 0 else None  # kind 0: no timestamp
            value = msg.value()
            # Fast path: one canonical JSON object (kcat, most shippers' canonical output), validated
            # in C and passed on as the bytes it came in.
            item = canonical_object(value) if value and len(value) <= max_bytes else None
            if value and item is not None and (item.observed_timestamp or _OBSERVED not in value):
                observed = None if item.observed_timestamp is not None else ts_us or item.timestamp
                message = item.message
                key = item.session_id or _session_key(item)
                part = known(key)
                if part is None:
                    part = partition_of(key)
                batch = pending.get(part)
                if batch is None:
                    batch = pending[part] = []
                attrs = item.attributes
                flags = (FLAG_SECURITY if item.security_flags else 0) | (
                    FLAG_TIMEOUT if attrs and attribute in attrs else 0
                )
                # the value goes on as it came: its origin, template and observed time are columns
                # (the template here: stateless per-line work belongs in ingest, not in the worker)
                batch.append((key, item.timestamp, item.level, item.service, item.endpoint, item.user_id,
                              item.latency_ms, item.status_code, flags, id_of(message), len(message),
                              t, p, o, 0, observed, value))  # fmt: skip
                fast += 1
                if len(batch) >= max_lines:
                    self._flush(out, part, batch)
                    pending[part] = []
                continue
            self._slow(out, pending, msg, t, p, o, ts_us)
        if topic is not None:
            positions[(topic, partition)] = offset + 1
        return count, fast

    def _slow(
        self,
        out: Routed,
        pending: dict[int, list[FramedLine]],
        msg: RawRecord,
        t: str,
        p: int,
        o: int,
        ts_us: int | None,
    ) -> None:
        """A message off the fast path: any other shape, a batch, or what goes to the dead-letter topic."""
        value = msg.value()
        records, errors = self.decoder.decode(value, ts_us)
        if errors:
            elements = batch_elements(value) if any(i is not None for i, _ in errors) else []
            for rej in rejections(value, errors, "decode", elements):  # the stage name of before
                out.rejected.append((msg, rej))
                self.dlq_by_type[rej.error_type] = self.dlq_by_type.get(rej.error_type, 0) + 1
        positions_of = good_positions(records, errors) if errors else range(len(records))
        partition_of = self.partition_of
        id_of = self.templates.id_of
        attribute = self.timeout_attribute
        max_lines = self.max_lines
        for rec, index in zip(records, positions_of, strict=True):
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
                          rec.get("status_code"), flags, id_of(rec["message"]), len(rec["message"]),
                          t, p, o, index, None, orjson.dumps(rec)))  # fmt: skip
            if len(batch) >= max_lines:
                self._flush(out, part, batch)
                pending[part] = []

    def _flush(self, out: Routed, part: int, batch: list[FramedLine]) -> None:
        """One canonical message, framed with its columns (encode_framed), its lines in event-time
        order within each session: the lines of one poll come partition by partition, and the worker's
        windows want them as they happened. Only within a message: across messages each raw
        partition's lines stay in offset order, which the worker's dedup relies on."""
        batch.sort(key=_time)  # itemgetter: a Python key function cost ~0.1 us a line
        out.values.setdefault(part, []).append(encode_framed(batch, self.timeout_attribute))
        out.lines += len(batch)


_OBSERVED = b'"observed_timestamp"'  # present but null: the slow path fills it (no duplicate key)


_time = itemgetter(1)  # a line's event time
_native = compiled.load("pipeline.ingest._route")
# the Java client's murmur2: in C when built (the pure-Python one took ~5 us a new session key)
_murmur2 = murmur2 if _native is None else _native.murmur2


def _session_key(item: Any) -> str:
    """session_key() of a canonical struct: session, else transaction, else user, else service."""
    if item.session_id:
        return str(item.session_id)
    if item.transaction_id:
        return f"tx:{item.transaction_id}"
    if item.user_id:
        return f"user:{item.user_id}"
    return f"svc:{item.service}"
