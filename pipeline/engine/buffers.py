"""Lookback buffers of one partition: lines kept per session as the raw messages they came in, with
per-session bounds, lookback expiry and the process memory budget (least recently active first)."""

from __future__ import annotations

from collections import OrderedDict, deque

from pipeline.engine.budget import Bucket, Suppressed
from pipeline.engine.model import Trigger, WindowConfig, WindowMetrics
from pipeline.engine.shared import Shared
from pipeline.engine.stats import Stats
from pipeline.types import LogRecord, RawLine

# Bytes a buffered line costs beyond its message text: the record dict and its values (the worker
# benchmark measures ~1.7 KB per buffered line in all).
ENTRY_OVERHEAD = 1600


class Chunk:
    """The lines of one raw message for one key, buffered together: no object per line."""

    __slots__ = ("bytes", "emitted", "idx", "max_ts", "offset", "recs", "start")

    def __init__(self, offset: int, recs: list[LogRecord], idx: list[int] | None) -> None:
        self.offset = offset
        self.recs = recs
        self.idx = idx  # positions in the raw message; None when they are 0..n-1
        self.start = 0  # lines before this position were expired or evicted
        self.emitted: set[int] | None = None
        self.max_ts = 0
        self.bytes = 0

    def line(self, topic: str, partition: int, pos: int) -> RawLine:
        """The line at `pos` with its id: its origin in logs.raw when it carries one (lines read from
        logs.sessions), else its place in the message it came in."""
        rec = self.recs[pos]
        if "raw_offset" in rec:
            return RawLine(rec, rec["raw_topic"], rec["raw_partition"], rec["raw_offset"], rec["raw_index"])
        index = pos if self.idx is None else self.idx[pos]
        return RawLine(rec, topic, partition, self.offset, index)

    def pending(self, pos: int) -> bool:
        return self.emitted is None or pos not in self.emitted

    def mark(self, pos: int) -> None:
        """This line was emitted, suppressed or dropped: no later trigger emits it again."""
        if self.emitted is None:
            self.emitted = set()
        self.emitted.add(pos)


def line_size(rec: LogRecord) -> int:
    return len(rec["message"]) + ENTRY_OVERHEAD


class Session:
    """One session's buffer and the per-session state the triggers, budget and statistics keep."""

    __slots__ = (
        "bucket",
        "buf",
        "bytes",
        "follow_since",
        "follow_until",
        "lines",
        "slow_at",
        "slow_fired",
        "slow_pending",
        "stats",
        "trigger",
        "win",
    )

    def __init__(self, burst: float) -> None:
        self.buf: deque[Chunk] = deque()
        self.lines = 0
        self.bytes = 0
        self.follow_since = 0  # a line arriving late (older than the trigger's lookback) is not followed
        self.follow_until = -1
        self.trigger: Trigger | None = None
        self.bucket = Bucket(burst)
        self.win = -1
        self.stats = Stats()
        self.slow_fired = False
        # a slow line came before the window had slow_session_min_lines: check each line until it has
        self.slow_pending = False
        self.slow_at = 0  # event time of the slow line a pending slow-session check started from

    def enter_window(self, win: int, stats: Stats) -> None:
        """The session's lines now fall in statistics window `win`."""
        self.win = win
        self.stats = stats
        self.slow_fired = False
        self.slow_pending = False
        self.slow_at = 0


class Buffers:
    """The sessions of one partition, least recently active first."""

    def __init__(
        self,
        config: WindowConfig,
        shared: Shared,
        metrics: WindowMetrics,
        burst: float,
        suppressed: dict[str, Suppressed],
    ) -> None:
        self.config = config
        self.shared = shared
        self.metrics = metrics
        self.burst = burst
        self.suppressed = suppressed  # the budget's: a session awaiting its summary is never evicted
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    def session(self, key: str) -> Session:
        st = self.sessions.get(key)
        if st is None:
            st = self.sessions[key] = Session(self.burst)
            if len(self.sessions) > self.config.max_sessions:
                self.evict_oldest()
        else:
            self.sessions.move_to_end(key)
        return st

    def evict_oldest(self) -> None:
        key, st = next(iter(self.sessions.items()))
        if key in self.suppressed:
            return  # keep it until its summary is out: nothing leaves silently
        del self.sessions[key]
        self.metrics.evicted_sessions += 1
        self.metrics.evicted_lines += st.lines
        self.shared.buffered_bytes -= st.bytes

    def bound(self, st: Session) -> None:
        """Per-session line and byte bounds, then the process memory budget (idle sessions first)."""
        cfg = self.config
        while st.lines > cfg.session_max_lines or (st.bytes > cfg.session_max_bytes and st.lines > 1):
            self.drop_first(st)
            self.metrics.evicted_lines += 1
        shared, sessions, budget = self.shared, self.sessions, cfg.memory_budget_bytes
        if shared.buffered_bytes <= budget:
            return
        # At high rates this is the steady state (every line is buffered, then evicted): the loop is
        # inlined, with the least recently active sessions leaving first.
        evicted = lines = 0
        suppressed = self.suppressed
        while shared.buffered_bytes > budget and len(sessions) > 1:
            key, oldest = sessions.popitem(last=False)
            if key in suppressed:  # kept until its summary is out: nothing leaves silently
                sessions[key] = oldest
                sessions.move_to_end(key, last=False)
                break
            evicted += 1
            lines += oldest.lines
            shared.buffered_bytes -= oldest.bytes
        self.metrics.evicted_sessions += evicted
        self.metrics.evicted_lines += lines

    def drop_first(self, st: Session) -> None:
        chunk = st.buf[0]
        size = line_size(chunk.recs[chunk.start])
        chunk.start += 1
        chunk.bytes -= size
        st.lines -= 1
        st.bytes -= size
        self.shared.buffered_bytes -= size
        if chunk.start == len(chunk.recs):
            st.buf.popleft()

    def expire(self, st: Session, oldest_us: int) -> None:
        """Forget lines older than the lookback (from the front, as they arrived)."""
        buf = st.buf
        while buf:
            chunk = buf[0]
            if chunk.max_ts and chunk.max_ts < oldest_us:
                buf.popleft()
                st.lines -= len(chunk.recs) - chunk.start
                st.bytes -= chunk.bytes
                self.shared.buffered_bytes -= chunk.bytes
                continue
            recs = chunk.recs
            while chunk.start < len(recs) and recs[chunk.start]["timestamp"] < oldest_us:
                self.drop_first(st)
                if not buf or buf[0] is not chunk:
                    break
            return

    def drop(self) -> None:
        """Forget every session (the partition was revoked): its memory returns to the budget."""
        for st in self.sessions.values():
            self.shared.buffered_bytes -= st.bytes
        self.sessions.clear()

    def lines(self) -> int:
        return sum(st.lines for st in list(self.sessions.values()))
