"""Per-session lookback buffers and the error trigger: pure logic, no Kafka or Faust imports."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.types import CuratedRecord, Level, RawLine, session_key

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    line: RawLine
    emitted: bool = False


@dataclass
class WindowConfig:
    """What the window keeps and what triggers it."""

    lookback_us: int = 60_000_000
    session_max_lines: int = 2000
    max_sessions: int = 100_000
    trigger_level: Level = Level.ERROR
    baseline_level: Level = Level.WARN
    retention_days: int = 30


@dataclass
class WindowMetrics:
    """Counters of what the window did (exported as hindsight_*_total)."""

    lines_in: int = 0
    lines_emitted: int = 0
    triggers: int = 0
    baseline: int = 0
    evicted_lines: int = 0
    evicted_sessions: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


def line_id(line: RawLine) -> str:
    """Deterministic id of a raw line."""
    return f"{line.topic}:{line.partition}:{line.offset}:{line.index}"


def curate(line: RawLine, reasons: list[str], trigger: RawLine | None, retention_days: int) -> CuratedRecord:
    """The curated form of a raw line."""
    record: CuratedRecord = {**line.record}  # type: ignore[typeddict-item]
    record["raw_topic"] = line.topic
    record["raw_partition"] = line.partition
    record["raw_offset"] = line.offset
    record["raw_index"] = line.index
    record["trigger_reasons"] = reasons
    record["trigger_id"] = f"t-{line_id(trigger)}" if trigger is not None else None
    record["trigger_offset"] = trigger.offset if trigger is not None else None
    record["rule_ids"] = []
    record["tags"] = []
    record["retention_days"] = retention_days
    return record


class SessionWindows:
    """Keeps each session's recent lines; a line at trigger level re-emits the session's window.

    Lines at baseline level (WARN+) are emitted at once. Each line is emitted at most once per
    process (an `emitted` flag), so a WARN line forwarded earlier is not repeated by a later trigger.
    Event time (the record's timestamp) decides what falls inside the lookback.
    """

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.metrics = WindowMetrics()
        self._sessions: OrderedDict[str, deque[_Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def buffered(self, key: str) -> list[RawLine]:
        """Lines currently held for a session (for tests and introspection)."""
        return [e.line for e in self._sessions.get(key, ())]

    def process(self, lines: Iterable[RawLine]) -> dict[str, list[CuratedRecord]]:
        """Feed lines in log order; return curated records grouped by session key."""
        out: dict[str, list[CuratedRecord]] = {}
        cfg = self.config
        trigger_at = cfg.trigger_level.value
        baseline_at = cfg.baseline_level.value
        for line in lines:
            self.metrics.lines_in += 1
            record = line.record
            key = session_key(record)
            buf = self._buffer(key)
            self._expire(buf, record["timestamp"] - cfg.lookback_us)
            severity = Level[record["level"]].value
            if severity >= trigger_at:
                self.metrics.triggers += 1
                emitted = out.setdefault(key, [])
                for entry in buf:
                    if not entry.emitted:
                        entry.emitted = True
                        emitted.append(curate(entry.line, ["error"], line, cfg.retention_days))
                emitted.append(curate(line, ["error"], line, cfg.retention_days))
                self._count("error", len(emitted))
                buf.append(_Entry(line, emitted=True))
            elif severity >= baseline_at:
                self.metrics.baseline += 1
                out.setdefault(key, []).append(curate(line, ["baseline"], None, cfg.retention_days))
                self._count("baseline", 1)
                buf.append(_Entry(line, emitted=True))
            else:
                buf.append(_Entry(line))
            if len(buf) > cfg.session_max_lines:
                buf.popleft()
                self.metrics.evicted_lines += 1
        self.metrics.lines_emitted += sum(len(v) for v in out.values())
        return out

    def _count(self, reason: str, n: int) -> None:
        self.metrics.by_reason[reason] = self.metrics.by_reason.get(reason, 0) + n

    def _buffer(self, key: str) -> deque[_Entry]:
        buf = self._sessions.get(key)
        if buf is None:
            buf = self._sessions[key] = deque()
            if len(self._sessions) > self.config.max_sessions:
                _, evicted = self._sessions.popitem(last=False)
                self.metrics.evicted_sessions += 1
                self.metrics.evicted_lines += len(evicted)
        else:
            self._sessions.move_to_end(key)
        return buf

    def _expire(self, buf: deque[_Entry], oldest_us: int) -> None:
        while buf and buf[0].line.record["timestamp"] < oldest_us:
            buf.popleft()
