"""The canonical topic (logs.sessions): lines re-keyed by session, many per message, each carrying its
origin in logs.raw (topic, partition, offset, index), so stored rows keep the raw line's identity.

A value is a JSON array of canonical records with four origin fields added; the worker validates it
in one msgspec pass (C), as it does canonical raw JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.types import LogRecord
from pipeline.wire.records import MAX_TS_US, MIN_TS_US

_Micros = Annotated[int, msgspec.Meta(ge=MIN_TS_US, lt=MAX_TS_US)]
ORIGIN_FIELDS = ("raw_topic", "raw_partition", "raw_offset", "raw_index")


class _Line(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One line of logs.sessions: a complete canonical record and its origin."""

    timestamp: _Micros
    observed_timestamp: _Micros
    service: str
    level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
    severity_number: Annotated[int, msgspec.Meta(ge=0, le=24)]
    message: str
    raw_topic: str
    raw_partition: Annotated[int, msgspec.Meta(ge=0)]
    raw_offset: Annotated[int, msgspec.Meta(ge=0)]
    raw_index: Annotated[int, msgspec.Meta(ge=0)]
    session_id: str | None = None
    user_id: str | None = None
    endpoint: str | None = None
    transaction_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    latency_ms: float | None = None
    status_code: int | None = None
    security_flags: list[str] = msgspec.field(default_factory=list)
    attributes: dict[str, str] = msgspec.field(default_factory=dict)


_DECODER = msgspec.json.Decoder(list[_Line])
_asdict = msgspec.structs.asdict


def encode_sessions(records: Sequence[dict[str, Any]]) -> bytes:
    """Records that already carry their origin fields, as one logs.sessions value."""
    return orjson.dumps(records)


def decode_sessions(value: bytes | None) -> list[LogRecord]:
    """A logs.sessions value as records (origin fields included); DecodeError if it is not one."""
    try:
        lines = _DECODER.decode(value or b"")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError("bad_sessions", f"not a logs.sessions batch: {exc}") from None
    return [cast(LogRecord, _asdict(line)) for line in lines]
