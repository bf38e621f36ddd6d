"""The canonical topic (logs.sessions): lines re-keyed by session, many per message, each carrying its
origin in logs.raw (topic, partition, offset, index), so stored rows keep the raw line's identity.

A value is a JSON array of canonical records with four origin fields added; the worker validates it
in one msgspec pass (C), as it does canonical raw JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, cast

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.types import LogRecord
from pipeline.wire.raw import _Canonical

ORIGIN_FIELDS = ("raw_topic", "raw_partition", "raw_offset", "raw_index")


class _Line(_Canonical, kw_only=True):
    """One line of logs.sessions: a canonical record and its origin (ingest fills every field)."""

    raw_topic: str
    raw_partition: Annotated[int, msgspec.Meta(ge=0)]
    raw_offset: Annotated[int, msgspec.Meta(ge=0)]
    raw_index: Annotated[int, msgspec.Meta(ge=0)]


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
