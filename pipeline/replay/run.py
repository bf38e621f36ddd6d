"""Replay: re-read logs.raw for a time range and filters into curated (or a file), tagged with a
replay id. The retroactive detail of a breach analysis is a replay of a period or an endpoint.

Re-running the same replay adds no rows: every line keeps its raw id (topic, partition, offset,
index), on which the store deduplicates, and the replay id is derived from the replay's parameters.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import orjson

from pipeline.engine.curate import curate, curate_lines
from pipeline.engine.model import Trigger
from pipeline.errors import QueryError
from pipeline.private import open_private, private_dir
from pipeline.replay.archive import read_archive
from pipeline.replay.rawscan import earliest_available_ms, scan_raw
from pipeline.settings import Settings
from pipeline.types import CuratedRecord, LogRecord, RawLine
from pipeline.wire.curated_topic import CuratedProducer
from pipeline.wire.raw import Where

log = logging.getLogger(__name__)

# Kafka time is when a line was published: a little after its event time, or much later when a
# service buffered it (offline, back-pressure). So read from a minute before the range to an hour after.
EARLY_MS = 60_000
LATE_MS = 3_600_000


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay: event time [since_us, until_us) and optional exact filters."""

    since_us: int
    until_us: int
    endpoint: str | None = None
    user: str | None = None
    service: str | None = None
    session: str | None = None
    from_offsets: tuple[tuple[int, int], ...] = ()
    reason: str = ""

    @property
    def replay_id(self) -> str:
        """Deterministic: the same replay gets the same id (the reason does not count)."""
        spec = {k: v for k, v in asdict(self).items() if k != "reason"}
        return "replay-" + hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]

    @property
    def where(self) -> Where:
        fields = (("endpoint", self.endpoint), ("user_id", self.user), ("service", self.service),
                  ("session_id", self.session))  # fmt: skip
        return Where(self.since_us, self.until_us, tuple((k, v) for k, v in fields if v is not None))

    def matches(self, rec: LogRecord) -> bool:
        return self.where.dict_test()(rec)


def parse_offsets(text: str) -> tuple[tuple[int, int], ...]:
    """'0:120,3:4500' -> ((0, 120), (3, 4500))."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        p, sep, o = part.partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise QueryError(f"bad --from-offsets entry {part!r}: use PARTITION:OFFSET[,...]")
        out.append((int(p), int(o)))
    return tuple(out)


def check_retention(settings: Settings, since_us: int) -> None:
    """Refuse a range logs.raw no longer holds, naming the earliest time still available."""
    earliest_ms = earliest_available_ms(settings)
    if earliest_ms is not None and since_us // 1000 < earliest_ms:
        earliest = datetime.fromtimestamp(earliest_ms / 1000, UTC).isoformat()
        asked = datetime.fromtimestamp(since_us / 1e6, UTC).isoformat()
        raise QueryError(
            f"{settings.raw_topic} no longer holds {asked} (retention passed); "
            f"the earliest time still available is {earliest}"
        )


def replay(
    settings: Settings,
    spec: ReplaySpec,
    to: str = "curated",
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Emit the matching raw lines to logs.curated (to='curated') or a JSONL file (.gz: gzipped)."""
    if spec.until_us <= spec.since_us:
        raise QueryError("--until must be after --since")
    archive = settings.archive_path / settings.raw_topic
    from_archive = False
    if not spec.from_offsets:
        try:
            check_retention(settings, spec.since_us)
        except QueryError:
            if not archive.is_dir():
                raise
            from_archive = True  # Kafka no longer holds the start: the archive does
    replay_id = spec.replay_id
    started = time.monotonic()
    first_read: float | None = None  # the read+filter rate leaves out the setup (metadata, retention)
    scanned = matched = 0
    writer: CuratedProducer | _FileWriter = (
        CuratedProducer(settings) if to == "curated" else _FileWriter(Path(to))
    )
    trigger = Trigger(replay_id, -1, ("replay",))
    attrs = {"hindsight.replay.reason": spec.reason} if spec.reason else {}
    seen: set[tuple[str, int, int, int]] = set()

    retention = settings.default_retention_days

    def emit(line: RawLine) -> CuratedRecord:
        row = curate(line, ["replay"], trigger, retention)
        row["tags"] = [replay_id]
        if attrs:
            row["attributes"] = {**row["attributes"], **attrs}
        return row

    try:
        if from_archive:
            test = spec.where.dict_test()
            for line in read_archive(archive.parent, settings.raw_topic, spec.since_us, spec.until_us):
                scanned += 1
                if test(line.record):
                    matched += 1
                    seen.add((line.topic, line.partition, line.offset, line.index))
                    writer.add_many([emit(line)])
        topic = settings.raw_topic
        for msg in scan_raw(
            settings,
            spec.since_us // 1000 - EARLY_MS,
            spec.until_us // 1000 + LATE_MS,
            progress=progress,
            from_offsets=dict(spec.from_offsets) or None,
            on_plan=on_plan,
            where=spec.where,  # the filter runs while decoding: unselected lines are never built
        ):
            scanned += msg.lines
            if not msg.records:
                continue
            if first_read is None:
                first_read = time.monotonic()
            if seen:
                pairs = [
                    (rec, index)
                    for rec, index in zip(msg.records, msg.indices, strict=True)
                    if (topic, msg.partition, msg.offset, index) not in seen
                ]
            else:
                pairs = list(zip(msg.records, msg.indices, strict=True))
            rows = curate_lines(
                [rec for rec, _ in pairs],
                [index for _, index in pairs],
                topic,
                msg.partition,
                msg.offset,
                ["replay"],
                trigger,
                retention,
                [replay_id],
            )
            if attrs:
                for row in rows:
                    row["attributes"] = {**row["attributes"], **attrs}
            matched += len(rows)
            writer.add_many(rows)
    finally:
        writer.close("replayed lines")
    ended = time.monotonic()
    seconds = ended - started
    read_seconds = ended - (first_read or started)
    log.info(
        "replay done id=%s scanned=%s matched=%s to=%s seconds=%.2f", replay_id, scanned, matched, to, seconds
    )
    return {
        "replay_id": replay_id,
        "to": to,
        "from_archive": from_archive,
        "scanned_lines": scanned,
        "matched_lines": matched,
        "seconds": round(seconds, 3),
        "lines_per_s": round(scanned / seconds) if seconds > 0 else None,
        "read_seconds": round(read_seconds, 3),
        "read_lines_per_s": round(scanned / read_seconds) if read_seconds > 0 else None,
    }


def _file_row(rec: CuratedRecord) -> dict[str, Any]:
    """A replayed line as `hindsight query --format jsonl` writes one: `timestamp` in ISO-8601 (UTC)
    and `timestamp_us`, so the two outputs read alike."""
    row: dict[str, Any] = dict(rec)
    us = rec["timestamp"]
    row["timestamp"] = datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()
    row["timestamp_us"] = us
    return row


class _FileWriter:
    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        raw = open_private(path)
        self.out: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb")) if path.suffix == ".gz" else raw
        )
        self._raw = raw

    def add_many(self, rows: list[CuratedRecord]) -> None:
        if rows:
            self.out.write(b"\n".join(orjson.dumps(_file_row(r)) for r in rows) + b"\n")

    def close(self, what: str = "", timeout_s: float | None = None) -> None:
        self.out.close()
        self._raw.close()  # a GzipFile given a file object leaves it open
