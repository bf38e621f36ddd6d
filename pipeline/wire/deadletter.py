"""Dead letters: the rejection of a record and the headers every dead letter carries, so an operator
can find (and replay) its source."""

from __future__ import annotations

from dataclasses import dataclass


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
