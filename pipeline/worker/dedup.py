"""Dropping repeats of canonical lines: what makes at-least-once ingest exact downstream.

Ingest writes each raw partition's lines to a canonical partition in raw-offset order (one idempotent
producer per raw partition owner: no gaps, no reordering), and commits raw offsets only after
delivery. After a crash or a rebalance the next owner produces the uncommitted lines again, with the
same origin. So on one canonical partition, a line whose (raw offset, raw index) is not above the
highest already seen from its raw partition is a repeat. The state is a few integers per raw
partition, rebuilt with the windows (a rebuild reads the canonical partition back)."""

from __future__ import annotations

from typing import Any

from pipeline.types import LogRecord


class OriginDedup:
    """Per canonical partition: raw partition -> the highest (raw offset, raw index) seen."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[int, tuple[int, int]]] = {}
        self.repeats = 0

    def fresh(self, partition: int, records: list[LogRecord]) -> list[LogRecord]:
        """The records not seen before on this canonical partition, in order."""
        seen = self.seen.get(partition)
        if seen is None:
            seen = self.seen[partition] = {}
        out: list[LogRecord] = []
        for rec in records:
            line: dict[str, Any] = rec  # type: ignore[assignment]
            raw_partition = line["raw_partition"]
            position = (line["raw_offset"], line["raw_index"])
            last = seen.get(raw_partition)
            if last is not None and position <= last:
                self.repeats += 1
                continue
            seen[raw_partition] = position
            out.append(rec)
        return out

    def drop(self, partition: int) -> None:
        """The canonical partition moved to another worker."""
        self.seen.pop(partition, None)
