"""Dropping canonical lines an ingest restart sent again: by their origin, per raw partition."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.worker.dedup import OriginDedup


@dataclass
class Line:
    raw_partition: int
    raw_offset: int
    raw_index: int


def test_new_lines_pass_and_repeats_of_earlier_messages_are_dropped() -> None:
    dedup = OriginDedup()
    # one message: lines of two raw partitions, sorted by time, not by offset
    first = [Line(0, 5, 1), Line(1, 9, 0), Line(0, 5, 0), Line(0, 6, 0)]
    assert dedup.keep(0, first) is None  # all new: nothing copied
    # ingest restarted: it sends raw offsets 5..7 of partition 0 and 9..10 of partition 1 again
    again = [Line(0, 5, 0), Line(1, 10, 0), Line(0, 6, 0), Line(0, 7, 0), Line(1, 9, 0), Line(0, 5, 1)]
    assert dedup.keep(0, again) == [1, 3]
    assert dedup.repeats == 4
    # another canonical partition has its own history; a dropped partition starts over
    assert dedup.keep(1, first) is None
    dedup.drop(0)
    assert dedup.keep(0, first) is None


def test_a_large_index_does_not_reach_the_next_offset() -> None:
    dedup = OriginDedup()
    assert dedup.keep(0, [Line(0, 1, 70_000)]) is None
    assert dedup.keep(0, [Line(0, 2, 0)]) is None  # offset 2 is after offset 1, whatever its index
    assert dedup.keep(0, [Line(0, 1, 69_999)]) == []
