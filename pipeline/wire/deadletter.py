"""Dead letters: the rejection of a record and the headers every dead letter carries, so an operator
can find (and replay) its source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from pipeline.errors import DecodeError


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that could not be used, with the reason it goes to the dead-letter topic."""

    error_type: str
    reason: str
    stage: str
    payload: bytes
    index: int | None = None


def dlq_headers(rej: Rejected, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    """Headers every dead letter carries, so an operator can find and replay the source."""
    headers = {
        "hindsight.error_type": rej.error_type.encode(),
        "hindsight.reason": rej.reason[:1000].encode("utf-8", "replace"),
        "hindsight.stage": rej.stage.encode(),
        "hindsight.source_topic": topic.encode(),
        "hindsight.source_partition": str(partition).encode(),
        "hindsight.source_offset": str(offset).encode(),
    }
    if rej.index is not None:
        headers["hindsight.source_index"] = str(rej.index).encode()
    return headers


def rejections(
    value: bytes | None,
    errors: Sequence[tuple[int | None, DecodeError]],
    stage: str,
    elements: Sequence[object],
) -> list[Rejected]:
    """What a decoder refused of one message, each with the bytes to dead-letter: the element cut out
    of a batch (`elements`: the message's decoded elements, empty when unknown), else the message."""
    out = []
    for index, exc in errors:
        payload = exc.payload or value or b""
        if exc.payload is None and index is not None and index < len(elements):
            payload = orjson.dumps(elements[index], default=str)
        out.append(Rejected(exc.error_type, exc.detail, stage, payload, index))
    return out
