"""The curated form of a raw line: its origin, why it was kept, and what rules added."""

from __future__ import annotations

from typing import cast

from pipeline.engine.model import LEVEL_VALUE, Trigger, line_id
from pipeline.engine.templates import Templates
from pipeline.types import CuratedRecord, LogRecord, RawLine

TEMPLATES = Templates()  # the process's template cache (curation of lines without an id)


def curate(
    line: RawLine, reasons: list[str], trigger: RawLine | Trigger | None, retention_days: int
) -> CuratedRecord:
    """The curated form of a raw line."""
    record: CuratedRecord = {**line.record}  # type: ignore[typeddict-item]
    set_curated(record, line.topic, line.partition, line.offset, line.index, reasons, trigger, retention_days)
    return record


def curate_lines(
    records: list[LogRecord],
    indices: list[int],
    topic: str,
    partition: int,
    offset: int,
    reasons: list[str],
    trigger: Trigger,
    retention_days: int,
    tags: list[str],
) -> list[CuratedRecord]:
    """curate() for lines of one raw message whose dicts nobody else holds (a scan's): each is
    extended in place rather than copied, with lists of its own."""
    rows: list[CuratedRecord] = []
    for rec, index in zip(records, indices, strict=True):
        row = cast(CuratedRecord, rec)
        set_curated(row, topic, partition, offset, index, list(reasons), trigger, retention_days)
        row["tags"] = list(tags)
        rows.append(row)
    return rows


def set_curated(
    record: CuratedRecord,
    topic: str,
    partition: int,
    offset: int,
    index: int,
    reasons: list[str],
    trigger: RawLine | Trigger | None,
    retention_days: int,
) -> None:
    """Add the curated fields to a record, in place."""
    if not record.get("template_id"):  # a line that did not come through ingest (replays, captures)
        record["template_id"] = TEMPLATES.id_of(record["message"])
    if not record.get("severity_number"):  # a record given without one (tests, older callers)
        record["severity_number"] = LEVEL_VALUE[record["level"]]
    record["raw_topic"] = topic
    record["raw_partition"] = partition
    record["raw_offset"] = offset
    record["raw_index"] = index
    record["trigger_reasons"] = reasons
    if isinstance(trigger, RawLine):
        record["trigger_id"] = f"t-{line_id(trigger)}"
        record["trigger_offset"] = trigger.offset
    elif trigger is not None:
        record["trigger_id"] = trigger.id
        record["trigger_offset"] = trigger.offset
    else:
        record["trigger_id"] = None
        record["trigger_offset"] = None
    record["rule_ids"] = []
    record["tags"] = []
    record["routes"] = []
    record["retention_days"] = retention_days
