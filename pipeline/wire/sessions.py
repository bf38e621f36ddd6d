"""The canonical topic (logs.sessions): lines re-keyed by session, many per message, each with its
origin in logs.raw (topic, partition, offset, index), so stored rows keep the raw line's identity.

Ingest writes framed values (pipeline/wire/frames.py). This module reads the unframed form, which
an older ingest wrote and the worker still accepts: a JSON array of canonical records with the
origin fields (and template id) written into each, validated in one msgspec pass (C)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, cast

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.types import LogRecord
from pipeline.wire.frames import framed_records, is_framed
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


def decode_lines(value: bytes | None) -> list[_Line]:
    """A logs.sessions value as validated lines (structs: their origin is read without a dict)."""
    try:
        return _DECODER.decode(value or b"")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions batch: {exc}") from None


def records_of(lines: Sequence[_Line]) -> list[LogRecord]:
    """Lines of decode_lines as records (origin fields included), severity filled from the level."""
    return [line.record() for line in lines]


def decode_sessions(value: bytes | None) -> list[LogRecord]:
    """A logs.sessions value, framed or not, as records (origin fields included); DecodeError if it is
    not one."""
    if is_framed(value):
        assert value is not None
        return framed_records(value)
    return records_of(decode_lines(value))


def split_sessions(value: bytes) -> list[bytes]:
    """The encoded form of each line of a logs.sessions value that decode_sessions accepted, in order:
    what the worker buffers instead of the decoded dicts (~0.7 us per line to split). A byte search
    for separators ingest would write is no cheaper: bytes.count and bytes.split over a 580 KB value
    cost 0.4-0.75 us a line each here, so checking and cutting took 1.85 us."""
    return [bytes(raw) for raw in _SPLIT.decode(value)]


def decode_line(line: bytes) -> LogRecord:
    """One line of split_sessions back as its record (a buffered line, decoded when it is emitted)."""
    try:
        return _ONE.decode(line).record()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions line: {exc}") from None
