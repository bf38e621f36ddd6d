"""The long-retention archive of logs.raw: hourly folders of Avro container files (zstandard).

Layout: `<dir>/<topic>/<YYYY-MM-DD>/<HH>/p<partition>-<first offset>-<last offset>.avro`, the hour
being the lines' event time (UTC). Each record is a LogRecord plus its raw position, so lines replayed
from the archive keep their raw ids and the store deduplicates them with lines replayed from Kafka.
A file is written to a temporary name and renamed: readers never see half a file, and a redelivered
batch with the same offsets replaces its file instead of adding one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from pipeline.private import open_private, private_dir
from pipeline.types import LogRecord, RawLine
from pipeline.wire.avro import SCHEMA_DIR, strip_logical

CODEC = "zstandard"


@cache
def archive_schema() -> Any:
    log = json.loads((SCHEMA_DIR / "log_record.avsc").read_text())
    fields = [
        *log["fields"],
        {"name": "raw_topic", "type": "string"},
        {"name": "raw_partition", "type": "int"},
        {"name": "raw_offset", "type": "long"},
        {"name": "raw_index", "type": "int"},
    ]
    record = {
        **log,
        "name": "ArchivedRecord",
        "fields": fields,
        "doc": "A raw line and its position in Kafka.",
    }
    return fastavro.parse_schema(strip_logical(record))


def hour_dir(root: Path, topic: str, ts_us: int) -> Path:
    t = datetime.fromtimestamp(ts_us / 1e6, UTC)
    return root / topic / t.strftime("%Y-%m-%d") / t.strftime("%H")


def write_hour(folder: Path, partition: int, lines: list[RawLine]) -> Path:
    """One immutable file of the lines (all of one partition and one hour)."""
    private_dir(folder)
    first, last = lines[0].offset, lines[-1].offset
    path = folder / f"p{partition}-{first}-{last}.avro"
    tmp = path.with_suffix(".avro.tmp")
    records = (
        {
            **ln.record,
            "raw_topic": ln.topic,
            "raw_partition": ln.partition,
            "raw_offset": ln.offset,
            "raw_index": ln.index,
        }
        for ln in lines
    )
    with open_private(tmp) as out:
        fastavro.writer(out, archive_schema(), records, codec=CODEC)
        out.flush()
        os.fsync(out.fileno())
    tmp.rename(path)
    return path


def read_archive(root: Path, topic: str, since_us: int, until_us: int) -> Iterator[RawLine]:
    """Archived lines with event time in [since_us, until_us), hour by hour."""
    hour = datetime.fromtimestamp(since_us / 1e6, UTC).replace(minute=0, second=0, microsecond=0)
    end = datetime.fromtimestamp(until_us / 1e6, UTC)
    while hour < end:
        folder = hour_dir(root, topic, int(hour.timestamp() * 1e6))
        for path in sorted(folder.glob("*.avro")) if folder.is_dir() else ():
            with open(path, "rb") as f:
                for rec in fastavro.reader(f):
                    assert isinstance(rec, dict)
                    if since_us <= rec["timestamp"] < until_us:
                        position = (rec.pop("raw_topic"), rec.pop("raw_partition"), rec.pop("raw_offset"))
                        index = rec.pop("raw_index")
                        yield RawLine(_as_record(rec), position[0], position[1], position[2], index)
        hour += timedelta(hours=1)


def _as_record(rec: dict[str, Any]) -> LogRecord:
    return rec  # type: ignore[return-value]


def group_by_hour(lines: Iterable[RawLine], root: Path) -> dict[tuple[Path, int], list[RawLine]]:
    groups: dict[tuple[Path, int], list[RawLine]] = {}
    for ln in lines:
        groups.setdefault((hour_dir(root, ln.topic, ln.record["timestamp"]), ln.partition), []).append(ln)
    return groups
