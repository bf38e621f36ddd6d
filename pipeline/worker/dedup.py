"""Dropping repeats of canonical lines: what makes at-least-once ingest exact downstream.

Ingest writes each raw partition's lines to a canonical partition in raw-offset order from message to
message (one idempotent producer per raw partition owner: no gaps, no reordering; within a message
the lines are sorted by time), and commits raw offsets only after delivery. After a crash or a
rebalance the next owner produces the uncommitted lines again, with the same origin. So on one
canonical partition, a line whose (raw offset, raw index) is not above the highest that earlier
messages brought from its raw partition is a repeat. The state is a few integers per raw
partition, rebuilt with the windows (a rebuild reads the canonical partition back)."""

from __future__ import annotations

from typing import Any

from pipeline.types import LogRecord


class OriginDedup:
    """Per canonical partition: raw partition -> the highest (raw offset, raw index) seen."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[int, tuple[int, int]]] = {}
        self.repeats = 0

    def fresh(
        self, partition: int, records: list[LogRecord], encoded: list[bytes]
    ) -> tuple[list[LogRecord], list[bytes]]:
        """The records of one message not seen before on this canonical partition, in order, with their
        encoded forms (`encoded` runs beside `records`).

        A message's lines are in event-time order, not raw-offset order (ingest sorts each message),
        so each is compared with what earlier messages brought, and the message's highest positions
        count from the next message on."""
        seen = self.seen.get(partition)
        if seen is None:
            seen = self.seen[partition] = {}
        out: list[LogRecord] = []
        out_encoded: list[bytes] = []
        highest: dict[int, tuple[int, int]] = {}
        for rec, enc in zip(records, encoded, strict=True):
            line: dict[str, Any] = rec  # type: ignore[assignment]
            raw_partition = line["raw_partition"]
            position = (line["raw_offset"], line["raw_index"])
            last = seen.get(raw_partition)
            if last is not None and position <= last:
                self.repeats += 1
                continue
            top = highest.get(raw_partition)
            if top is None or position > top:
                highest[raw_partition] = position
            out.append(rec)
            out_encoded.append(enc)
        seen.update(highest)
        return out, out_encoded

    def drop(self, partition: int) -> None:
        """The canonical partition moved to another worker."""
        self.seen.pop(partition, None)
