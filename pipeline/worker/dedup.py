"""Dropping repeats of canonical lines: what makes at-least-once ingest exact downstream.

Ingest writes each raw partition's lines to a canonical partition in raw-offset order from message to
message (one idempotent producer per raw partition owner: no gaps, no reordering; within a message
the lines are sorted by time), and commits raw offsets only after delivery. After a crash or a
rebalance the next owner produces the uncommitted lines again, with the same origin. So on one
canonical partition, a line whose (raw offset, raw index) is not above the highest that earlier
messages brought from its raw partition is a repeat. The state is a few integers per raw
partition, rebuilt with the windows (a rebuild reads the canonical partition back)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# a line's place in its raw partition as one int: offset, then index (< 2**20 lines per raw message)
_INDEX_BITS = 20


class Origin(Protocol):
    """What the dedup reads of a line: where it came from in logs.raw."""

    raw_partition: int
    raw_offset: int
    raw_index: int


class OriginDedup:
    """Per canonical partition: raw partition -> the highest (raw offset, raw index) seen."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[int, int]] = {}
        self.repeats = 0

    def keep(self, partition: int, lines: Sequence[Origin]) -> list[int] | None:
        """keep_origins() of lines that carry their origin."""
        return self.keep_origins(
            partition,
            [line.raw_partition for line in lines],
            [line.raw_offset for line in lines],
            [line.raw_index for line in lines],
        )

    def keep_origins(
        self, partition: int, raw_partitions: list[int], raw_offsets: list[int], raw_indexes: list[int]
    ) -> list[int] | None:
        """Positions of the lines of one message (given by their origins, column by column) not seen
        before on this canonical partition, or None when all are new (the usual case: the caller
        then copies nothing).

        A message's lines are in event-time order within a session, not raw-offset order (ingest
        sorts each message), so each is compared with what earlier messages brought, and the
        message's highest positions count from the next message on. ~0.3 us a line: one int per
        line, one dict lookup."""
        seen = self.seen.get(partition)
        if seen is None:
            seen = self.seen[partition] = {}
        highest: dict[int, int] = {}
        repeated: list[int] | None = None
        for i, (raw_partition, raw_offset, raw_index) in enumerate(
            zip(raw_partitions, raw_offsets, raw_indexes, strict=True)
        ):
            position = (raw_offset << _INDEX_BITS) | raw_index
            if position <= seen.get(raw_partition, -1):
                if repeated is None:
                    repeated = []
                repeated.append(i)
                continue
            if position > highest.get(raw_partition, -1):
                highest[raw_partition] = position
        seen.update(highest)
        if repeated is None:
            return None
        self.repeats += len(repeated)
        dropped = set(repeated)
        return [i for i in range(len(raw_offsets)) if i not in dropped]

    def drop(self, partition: int) -> None:
        """The canonical partition moved to another worker."""
        self.seen.pop(partition, None)
