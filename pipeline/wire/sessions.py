"""The canonical topic (logs.sessions): lines re-keyed by session, many per message, each carrying its
origin in logs.raw (topic, partition, offset, index), so stored rows keep the raw line's identity.

A value is a JSON array of canonical records with four origin fields added, which the worker can
validate in one msgspec pass (C). Ingest writes it framed: FRAME, the header's length (4 bytes, big
endian), a msgpack header with the columns the engine's per-line loop reads (Columns: the lines
grouped by session, each line's time, level, service, endpoint, user, latency, status, trigger
flags, template id, size, origin and end in the array), then the array itself. The worker reads
the header and keeps each session's lines as one slice of the array, decoding a line only when it
may trigger, match a rule or be kept: 0.5 us a line against 2.6-3.7 us to validate and cut every
line. An unframed array (older ingest, tests) is still read line by line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Annotated, Any, cast

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.types import Columns, LogRecord
from pipeline.wire.raw import _Canonical
from pipeline.wire.records import _LEVEL_NAMES

ORIGIN_FIELDS = ("raw_topic", "raw_partition", "raw_offset", "raw_index")


class _Line(_Canonical, kw_only=True):
    """One line of logs.sessions: a canonical record and its origin (ingest fills every field)."""

    raw_topic: str
    raw_partition: Annotated[int, msgspec.Meta(ge=0)]
    raw_offset: Annotated[int, msgspec.Meta(ge=0)]
    raw_index: Annotated[int, msgspec.Meta(ge=0)]
    template_id: str | None = None  # the message's template (ingest sets it; older lines lack it)

    def record(self) -> LogRecord:
        """The line as a record (origin fields included), its severity filled from the level. The
        worker's engine reads the struct's attributes and asks this only of the few lines that may
        trigger, match a rule or be emitted (a dict for every line was 2-4 us of ~10)."""
        rec = cast(LogRecord, _asdict(self))
        if not self.severity_number:
            rec["severity_number"] = _LEVEL_NAMES[self.level]
        return rec


_DECODER = msgspec.json.Decoder(list[_Line])
_ONE = msgspec.json.Decoder(_Line)
_SPLIT = msgspec.json.Decoder(list[msgspec.Raw])
_asdict = msgspec.structs.asdict


def encode_sessions(records: Sequence[dict[str, Any]]) -> bytes:
    """Records that already carry their origin fields, as one logs.sessions value."""
    return orjson.dumps(records)


def join_lines(lines: Sequence[bytes]) -> bytes:
    """Lines already encoded one by one (each a JSON object with its origin), as one value."""
    return b"[" + b",".join(lines) + b"]"


_ORIGIN_HEADS: dict[tuple[str, int], bytes] = {}  # (raw topic, raw partition) -> the head before the offset


def _origin_head(topic: str, partition: int) -> bytes:
    head = _ORIGIN_HEADS.get((topic, partition))
    if head is None:
        if len(_ORIGIN_HEADS) >= 10_000:
            _ORIGIN_HEADS.clear()
        head = b'{"raw_topic":%b,"raw_partition":%d,"raw_offset":' % (orjson.dumps(topic), partition)
        _ORIGIN_HEADS[(topic, partition)] = head
    return head


def with_origin(
    value: bytes,
    topic: str,
    partition: int,
    offset: int,
    observed_us: int | None,
    template_id: str | None = None,
) -> bytes:
    """A raw value that is one canonical JSON object, as a line of logs.sessions without decoding it
    again: its origin, its template id (a canonical object has none) and the observed time (when it
    has none) written in front of its own fields. Ingest's fast path for single-line messages:
    ~0.7 us instead of ~3 us for a dict and its encoding (the head up to the offset is cached per raw
    partition: 1.0 us before; one format call, a memoryview of the value measured slower)."""
    rest = value[1:]
    head = _origin_head(topic, partition)
    if template_id is not None:  # 16 hex digits: nothing to escape
        if observed_us is not None:
            return b'%b%d,"raw_index":0,"template_id":"%b","observed_timestamp":%d,%b' % (
                head, offset, template_id.encode(), observed_us, rest
            )  # fmt: skip
        return b'%b%d,"raw_index":0,"template_id":"%b",%b' % (head, offset, template_id.encode(), rest)
    if observed_us is not None:
        return b'%b%d,"raw_index":0,"observed_timestamp":%d,%b' % (head, offset, observed_us, rest)
    return b'%b%d,"raw_index":0,%b' % (head, offset, rest)


def decode_lines(value: bytes | None) -> list[_Line]:
    """A logs.sessions value as validated lines (structs: their origin is read without a dict)."""
    try:
        return _DECODER.decode(body_of(value))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions batch: {exc}") from None


def records_of(lines: Sequence[_Line]) -> list[LogRecord]:
    """Lines of decode_lines as records (origin fields included), severity filled from the level."""
    return [line.record() for line in lines]


def decode_sessions(value: bytes | None) -> list[LogRecord]:
    """A logs.sessions value as records (origin fields included); DecodeError if it is not one."""
    return records_of(decode_lines(value))


def split_sessions(value: bytes) -> list[bytes]:
    """The encoded form of each line of a logs.sessions value that decode_sessions accepted, in order:
    what the worker buffers instead of the decoded dicts (~0.7 us per line to split). A byte search
    for separators ingest would write is no cheaper: bytes.count and bytes.split over a 580 KB value
    cost 0.4-0.75 us a line each here, so checking and cutting took 1.85 us."""
    return [bytes(raw) for raw in _SPLIT.decode(body_of(value))]


def decode_line(line: bytes) -> LogRecord:
    """One line of split_sessions back as its record (a buffered line, decoded when it is emitted)."""
    try:
        return _ONE.decode(line).record()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions line: {exc}") from None


# ---- framed messages: the columns beside the lines ----------------------------------------------
FRAME = b"\x00hs2"  # never the first bytes of a JSON value
LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
LEVEL_INDEX = {name: i for i, name in enumerate(LEVELS)}
_Index = Annotated[int, msgspec.Meta(ge=0)]


class _Header(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """A framed message's columns; the strings (service, endpoint, user, template) as indexes into
    `strings`: each distinct one is decoded once per message, and the engine's dict lookups hash it
    once."""

    keys: list[str]
    counts: list[_Index]
    strings: list[str | None]
    timestamp: list[_Index]
    level: list[Annotated[int, msgspec.Meta(ge=0, le=5)]]
    service: list[_Index]
    endpoint: list[_Index]
    user_id: list[_Index]
    template_id: list[_Index]
    latency_ms: list[float | None]
    status_code: list[int | None]
    flags: list[_Index]
    size: list[_Index]
    raw_partition: list[_Index]
    raw_offset: list[_Index]
    raw_index: list[_Index]
    ends: list[_Index]
    timeout_attribute: str


_HEADER_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)

# One line as ingest frames it: (session key, time, level, service, endpoint, user, latency, status,
# flags, template id, message length, raw partition, raw offset, raw index, the encoded line).
FramedLine = tuple[
    str, int, str, str, "str | None", "str | None", "float | None", "int | None",
    int, str, int, int, int, int, bytes,
]  # fmt: skip


def encode_framed(lines: Sequence[FramedLine], timeout_attribute: str) -> bytes:
    """Lines (in event-time order) as one framed logs.sessions value: grouped by session in order of
    each session's first line, which is how the engine processes them anyway."""
    groups: dict[str, list[FramedLine]] = {}
    for line in lines:
        group = groups.get(line[0])
        if group is None:
            groups[line[0]] = [line]
        else:
            group.append(line)
    ordered = [line for group in groups.values() for line in group]
    (_, ts, level, service, endpoint, user, latency, status, flags, tid, size, rp, ro, ri, encoded) = zip(
        *ordered, strict=True
    )
    strings: dict[str | None, int] = {}
    index = strings.setdefault
    header = _Header(
        list(groups),
        [len(group) for group in groups.values()],
        [],
        list(ts),
        [LEVEL_INDEX[name] for name in level],
        [index(v, len(strings)) for v in service],
        [index(v, len(strings)) for v in endpoint],
        [index(v, len(strings)) for v in user],
        [index(v, len(strings)) for v in tid],
        list(latency),
        list(status),
        list(flags),
        list(size),
        list(rp),
        list(ro),
        list(ri),
        # line i ends after "[" and i lines and commas before it: the running sum of len + 1
        list(accumulate([len(e) + 1 for e in encoded])),
        timeout_attribute,
    )
    header.strings = list(strings)
    head = _HEADER_ENCODER.encode(header)
    return b"%b%b%b%b" % (FRAME, len(head).to_bytes(4, "big"), head, join_lines(encoded))


@dataclass(slots=True)
class Framed:
    """A framed logs.sessions value: its columns (the body in `columns.body`) and each line's origin."""

    columns: Columns
    raw_partition: list[int]
    raw_offset: list[int]
    raw_index: list[int]


def is_framed(value: bytes | None) -> bool:
    return value is not None and value[:4] == FRAME


def decode_framed(value: bytes) -> Framed:
    """A framed value's header, checked against its body (DecodeError if it does not fit); the lines
    are not decoded."""
    try:
        size = int.from_bytes(value[4:8], "big")
        h = _HEADER_DECODER.decode(memoryview(value)[8 : 8 + size])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions frame: {exc}") from None
    body = value[8 + size :]
    n = len(h.timestamp)
    columns = (h.level, h.service, h.endpoint, h.user_id, h.template_id, h.latency_ms, h.status_code,
               h.flags, h.size, h.raw_partition, h.raw_offset, h.raw_index, h.ends)  # fmt: skip
    ends = h.ends
    if (
        any(len(c) != n for c in columns)
        or sum(h.counts) != n
        or len(h.keys) != len(h.counts)
        or n == 0
        or body[:1] != b"["
        or ends[-1] != len(body) - 1
        or body[-1:] != b"]"
        or any(a >= b for a, b in pairwise(ends))
        or ends[0] < 2
    ):
        raise DecodeError("bad_sessions", "a logs.sessions frame whose columns do not fit its lines")
    strings = h.strings
    try:
        service = [strings[i] for i in h.service]
        endpoint = [strings[i] for i in h.endpoint]
        user = [strings[i] for i in h.user_id]
        tid = [strings[i] for i in h.template_id]
    except IndexError:
        raise DecodeError("bad_sessions", "a logs.sessions frame with a string index out of range") from None
    if None in service or None in tid:
        raise DecodeError("bad_sessions", "a logs.sessions frame with a line without service or template")
    levels = LEVELS
    cols = Columns(
        h.keys,
        h.counts,
        h.timestamp,
        [levels[i] for i in h.level],
        cast(list[str], service),
        endpoint,
        user,
        h.latency_ms,
        h.status_code,
        h.flags,
        cast(list[str], tid),
        h.size,
        h.timeout_attribute,
        body=body,
        ends=ends,
    )
    return Framed(cols, h.raw_partition, h.raw_offset, h.raw_index)


def body_of(value: bytes | None) -> bytes:
    """The JSON array of a logs.sessions value, framed or not."""
    if value is not None and value[:4] == FRAME:
        return value[8 + int.from_bytes(value[4:8], "big") :]
    return value or b""
