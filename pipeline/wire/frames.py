"""The framed logs.sessions value ingest writes: the columns the window engine reads, then the lines.

FRAME, the header's length (4 bytes, big endian), a msgpack header, then a JSON array of the lines.
The header holds the lines grouped by session (in order of each session's first line, each session's
lines in event-time order) and, per line, the fields the engine's per-line loop reads (Columns: time,
level, service, endpoint, user, latency, status, trigger flags, template id, message length), its
origin in logs.raw, its observed time when it had none, and its end in the array. Each line is the
raw value as it came (a canonical JSON object) or, for other shapes, its canonical record: ingest
writes nothing into it, and its record is its own fields plus what the header says (Origins).

The worker reads the header, keeps each session's lines as one slice of the array and decodes a line
only when it may trigger, match a rule or be kept: in-process ~3 us a line against ~8 us to validate
and cut every line (1000-line messages, same run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice
from operator import itemgetter, lt
from typing import Annotated, cast

import msgspec
import orjson

from pipeline import compiled
from pipeline.errors import DecodeError
from pipeline.types import Columns, LogRecord, Origins
from pipeline.wire.raw import _Canonical
from pipeline.wire.records import _LEVEL_NAMES

FRAME = b"\x00hs2"  # never the first bytes of a JSON value
LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
LEVEL_INDEX = {name: i for i, name in enumerate(LEVELS)}
_Index = Annotated[int, msgspec.Meta(ge=0)]


class _Header(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """A framed message's columns; the strings (service, endpoint, user, template, raw topic) as
    indexes into `strings`: each distinct one is decoded once per message, and the engine's dict
    lookups hash it once."""

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
    raw_topic: list[_Index]
    raw_partition: list[_Index]
    raw_offset: list[_Index]
    raw_index: list[_Index]
    observed: list[_Index | None]
    ends: list[_Index]
    timeout_attribute: str


_HEADER_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
_LINE = msgspec.json.Decoder(_Canonical)
_asdict = msgspec.structs.asdict

# One line as ingest frames it: (session key, time, level, service, endpoint, user, latency, status,
# flags, template id, message length, raw topic, raw partition, raw offset, raw index, observed time
# when the line has none, the line's bytes).
FramedLine = tuple[
    str, int, str, str, "str | None", "str | None", "float | None", "int | None",
    int, str, int, str, int, int, int, "int | None", bytes,
]  # fmt: skip


def encode_framed(lines: Sequence[FramedLine], timeout_attribute: str) -> bytes:
    """Lines (in event-time order) as one framed value, grouped by session in order of each session's
    first line, which is how the engine processes them anyway: in C when it is built (_frames.c, the
    same bytes; ~0.25 us a line against ~1 us here), else _encode_framed_py. The C form declines
    (TypeError) a value it does not write, such as an int beyond 64 bits, and this form writes it."""
    if _native is not None and type(lines) is list:
        try:
            return cast(bytes, _native.encode_framed(lines, timeout_attribute, FRAME, LEVEL_INDEX))
        except TypeError:
            pass
    return _encode_framed_py(lines, timeout_attribute)


def _encode_framed_py(lines: Sequence[FramedLine], timeout_attribute: str) -> bytes:
    """encode_framed in Python. Every step per line is a C call (map,
    itemgetter, a sort keyed by a list's __getitem__): ~0.6 us a line, against ~1 us with Python loops
    and comprehensions (same run, 1000-line messages)."""
    keys = list(dict.fromkeys(map(_first, lines)))  # the sessions, in order of their first line
    if len(keys) == 1:
        ordered: Sequence[FramedLine] = lines
        counts = [len(lines)]
    else:
        rank = {key: i for i, key in enumerate(keys)}
        ranks = list(map(rank.__getitem__, map(_first, lines)))
        # a stable sort by session rank keeps each session's lines in the order they came (time)
        ordered = itemgetter(*sorted(range(len(lines)), key=ranks.__getitem__))(lines)
        tally = Counter(ranks)
        counts = list(map(tally.__getitem__, range(len(keys))))
    (_, ts, level, service, endpoint, user, latency, status, flags, tid, size, topic, rp, ro, ri, observed,
     encoded) = zip(*ordered, strict=True)  # fmt: skip
    strings = list(dict.fromkeys(chain(service, endpoint, user, tid, topic)))
    index = {text: i for i, text in enumerate(strings)}.__getitem__
    header = _Header(
        keys,
        counts,
        strings,
        list(ts),
        list(map(LEVEL_INDEX.__getitem__, level)),
        list(map(index, service)),
        list(map(index, endpoint)),
        list(map(index, user)),
        list(map(index, tid)),
        list(latency),
        list(status),
        list(flags),
        list(size),
        list(map(index, topic)),
        list(rp),
        list(ro),
        list(ri),
        list(observed),
        # line i ends after "[" and i lines and commas before it: the running sum of len + 1
        list(accumulate(map(_plus_one, map(len, encoded)))),
        timeout_attribute,
    )
    head = _HEADER_ENCODER.encode(header)
    return b"%b%b%b[%b]" % (FRAME, len(head).to_bytes(4, "big"), head, b",".join(encoded))


_first = itemgetter(0)
_plus_one = (1).__add__
_native = compiled.load("pipeline.wire._frames")


@dataclass(slots=True)
class Framed:
    """A framed value: its columns (the lines in `columns.body`, what they lack in `columns.origins`)."""

    columns: Columns

    @property
    def origins(self) -> Origins:
        assert self.columns.origins is not None
        return self.columns.origins


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
               h.flags, h.size, h.raw_topic, h.raw_partition, h.raw_offset, h.raw_index, h.observed,
               h.ends)  # fmt: skip
    ends = h.ends
    if (
        any(len(c) != n for c in columns)
        or sum(h.counts) != n
        or len(h.keys) != len(h.counts)
        or n == 0
        or body[:1] != b"["
        or ends[-1] != len(body) - 1
        or body[-1:] != b"]"
        or not all(map(lt, ends, islice(ends, 1, None)))
        or ends[0] < 2
    ):
        raise DecodeError("bad_sessions", "a logs.sessions frame whose columns do not fit its lines")
    strings = h.strings
    try:
        service = _pick(strings, h.service)
        endpoint = _pick(strings, h.endpoint)
        user = _pick(strings, h.user_id)
        tid = _pick(strings, h.template_id)
        topic = _pick(strings, h.raw_topic)
    except IndexError:
        raise DecodeError("bad_sessions", "a logs.sessions frame with a string index out of range") from None
    if None in service or None in tid or None in topic:
        raise DecodeError("bad_sessions", "a logs.sessions frame with a line without service or origin")
    origins = Origins(cast(list[str], topic), h.raw_partition, h.raw_offset, h.raw_index,
                      cast(list[str], tid), h.observed)  # fmt: skip
    cols = Columns(
        h.keys,
        h.counts,
        h.timestamp,
        cast(list[str], _pick(LEVELS, h.level)),
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
        origins=origins,
        decode=bare_line,
    )
    return Framed(cols)


def _pick(values: Sequence[str | None], indexes: list[int]) -> list[str | None]:
    """[values[i] for i in indexes], in C: a list comprehension per column was ~40% of decode_framed."""
    if len(indexes) > 1:
        return list(itemgetter(*indexes)(values))
    return [values[i] for i in indexes]


def bare_line(line: bytes) -> LogRecord:
    """One line of a frame as its record without what the header adds (Origins.complete adds it);
    DecodeError for a line ingest did not write."""
    try:
        item = _LINE.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions line: {exc}") from None
    rec = cast(LogRecord, _asdict(item))
    if not item.severity_number:
        rec["severity_number"] = _LEVEL_NAMES[item.level]
    return rec


def framed_records(value: bytes) -> list[LogRecord]:
    """Every line of a framed value as its record, origin included, in the frame's order."""
    cols = decode_framed(value).columns
    body, ends, origins = cols.body, cols.ends, cols.origins
    assert body is not None and ends is not None and origins is not None
    starts = [1] + [end + 1 for end in ends[:-1]]
    return [
        origins.complete(bare_line(body[start:end]), pos)
        for pos, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]


def unframed(value: bytes) -> bytes:
    """A framed value as the same lines unframed (each with its origin written in), in the same order:
    what the worker reads line by line when it must drop repeats from a message."""
    return orjson.dumps(framed_records(value))
