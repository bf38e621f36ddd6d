"""Lookback buffers of one partition: lines kept per session as the raw messages they came in, with
per-session bounds, lookback expiry and the process memory budget (least recently active first)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from pipeline.engine.budget import Bucket, Suppressed
from pipeline.engine.model import Trigger, WindowConfig, WindowMetrics
from pipeline.engine.shared import Shared
from pipeline.engine.stats import Stats
from pipeline.types import LineView, LogRecord, Origins, RawLine

# Bytes a buffered line costs beyond its message text when it is kept as its record dict (lines
# handed over without their encoded form): the dict and its values, ~1.7 KB in all (measured by the
# worker benchmark).
ENTRY_OVERHEAD = 1600
# Bytes a line kept as its encoded form costs beyond that form's length: the bytes object's header,
# its slot in the chunk's list, its timestamp (an int and a slot), and its share of the chunk and
# of its session's statistics (tracemalloc: 726 B per line of 540 encoded, 1.35x; it was 1.7 KB).
COMPACT_OVERHEAD = 180
# How much longer than the lookback a quiet session is kept (event time): lines of one session
# from several producers arrive a few seconds out of order.
SWEEP_MARGIN_US = 10_000_000


class Chunk:
    """The lines of one session from one message, buffered together: no object per line. Their
    timestamps are a list; the lines themselves are one slice of the message's encoded body (`blob`,
    from byte `lead` of the body: what the worker keeps of a framed logs.sessions message), with the
    message's `ends` of each line and `origins` (what the lines do not carry) shared by its chunks,
    its lines from `base` on; or each line's encoded form (`data`), or their views (`recs`:
    records from logs.raw, or while the message is processed). A line kept encoded is decoded again
    only when it is emitted."""

    __slots__ = (
        "base",
        "blob",
        "bytes",
        "count",
        "data",
        "decode",
        "emitted",
        "ends",
        "idx",
        "keys",
        "lead",
        "max_ts",
        "offset",
        "origins",
        "recs",
        "start",
        "ts",
    )

    def __init__(
        self,
        offset: int,
        ts: list[int],
        recs: list[LineView] | None,
        idx: list[int] | None = None,
        data: list[bytes] | None = None,
        decode: Callable[[bytes], LogRecord] | None = None,
        blob: bytes | None = None,
        ends: list[int] | None = None,
        origins: Origins | None = None,
        base: int = 0,
        lead: int = 0,
    ) -> None:
        self.offset = offset
        self.ts = ts
        self.recs = recs
        self.count = len(ts)
        self.data = data if decode is not None else None  # encoded lines, beside recs
        self.blob = blob if decode is not None else None
        # beside blob, the message's: not sliced per session (~1.5 us a group, 5% of the worker's
        # main thread under py-spy), the chunk's line `pos` is the message's line base + pos
        self.ends = ends
        self.origins = origins  # what the lines do not carry themselves
        self.base = base
        self.lead = lead  # where blob starts in the message's body
        self.decode = decode
        # (endpoint, user_id, service) when every line has the same ones: captures skip the chunk
        # or take it whole without decoding its lines
        self.keys: tuple[str | None, str | None, str | None] | None = None
        self.idx = idx  # positions in the raw message; None when they are 0..n-1
        self.start = 0  # lines before this position were expired or evicted
        self.emitted: set[int] | None = None
        self.max_ts = 0
        self.bytes = 0

    @property
    def compact(self) -> bool:
        return self.data is not None or self.blob is not None

    def encoded_bytes(self) -> int:
        """What the chunk will cost once sealed, when it keeps encoded lines."""
        if self.blob is not None:
            return len(self.blob) + COMPACT_OVERHEAD * self.count
        data = self.data
        return sum(map(len, data)) + COMPACT_OVERHEAD * len(data) if data is not None else 0

    def seal(self, keys: tuple[str | None, str | None, str | None] | None) -> None:
        """The message was processed: keep only the encoded lines and what captures look up (`keys`:
        the lines' endpoint, user and service when all of them have the same)."""
        if self.compact:
            self.keys = keys
            self.recs = None

    def rec(self, pos: int) -> LogRecord:
        """The record of the line at `pos` (decoded again if it is kept encoded)."""
        recs = self.recs
        if recs is not None:
            return recs[pos].record()
        assert self.decode is not None
        blob = self.blob
        if blob is not None:
            ends = self.ends
            assert ends is not None
            i = self.base + pos
            lead = self.lead
            rec = self.decode(blob[ends[i - 1] + 1 - lead if pos else 0 : ends[i] - lead])
            return self.origins.complete(rec, i) if self.origins is not None else rec
        assert self.data is not None
        return self.decode(self.data[pos])

    def timestamp(self, pos: int) -> int:
        return self.ts[pos]

    def size(self, pos: int) -> int:
        """What the line at `pos` counts against the memory budget."""
        ends = self.ends
        if self.blob is not None and ends is not None:
            i = self.base + pos
            return ends[i] - (ends[i - 1] + 1 if pos else self.lead) + COMPACT_OVERHEAD
        data = self.data
        if data is not None:
            return len(data[pos]) + COMPACT_OVERHEAD
        recs = self.recs
        assert recs is not None
        return len(recs[pos].message) + ENTRY_OVERHEAD

    def line(self, topic: str, partition: int, pos: int) -> RawLine:
        """The line at `pos` with its id: its origin in logs.raw when it carries one (lines read from
        logs.sessions), else its place in the message it came in."""
        rec = self.rec(pos)
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
        self.now_us = 0  # the partition's event-time watermark (the engine keeps it current)
        # The last eviction of a session that still held lines: when (event time) and how long it had
        # been idle. Sessions leave least recently active first, so that idle time is how far back a
        # trigger's lookback still reaches for a session that was quiet that long.
        self.cut_at_us = -1
        self.cut_idle_us = 0

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
        self._cut(st)

    def _cut(self, st: Session) -> None:
        if st.lines and st.buf:
            self.cut_at_us = self.now_us
            self.cut_idle_us = max(self.now_us - st.buf[-1].max_ts, 0)

    def effective_lookback_us(self) -> int:
        """The lookback a trigger can count on: the configured one, or shorter while sessions that
        still held lines are being evicted (within the last lookback of event time)."""
        lookback = self.config.lookback_us
        if self.cut_at_us < 0 or self.now_us - self.cut_at_us > lookback:
            return lookback
        return min(lookback, self.cut_idle_us)

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
            self._cut(oldest)
        self.metrics.evicted_sessions += evicted
        self.metrics.evicted_lines += lines

    def drop_first(self, st: Session) -> None:
        chunk = st.buf[0]
        size = chunk.size(chunk.start)
        chunk.start += 1
        chunk.bytes -= size
        st.lines -= 1
        st.bytes -= size
        self.shared.buffered_bytes -= size
        if chunk.start == chunk.count:
            st.buf.popleft()

    def expire(self, st: Session, oldest_us: int) -> None:
        """Forget lines older than the lookback (from the front, as they arrived)."""
        buf = st.buf
        while buf:
            chunk = buf[0]
            if chunk.max_ts and chunk.max_ts < oldest_us:
                buf.popleft()
                st.lines -= chunk.count - chunk.start
                st.bytes -= chunk.bytes
                self.shared.buffered_bytes -= chunk.bytes
                continue
            while chunk.start < chunk.count and chunk.timestamp(chunk.start) < oldest_us:
                self.drop_first(st)
                if not buf or buf[0] is not chunk:
                    break
            return

    def sweep(self, now_us: int) -> int:
        """Forget sessions quiet for longer than the lookback (and SWEEP_MARGIN_US for lines arriving
        out of order) that are not in a follow-up or awaiting a summary: a trigger can no longer reach
        their lines, and a session seen once (most of them) would otherwise hold its lines until the
        memory budget evicted it, as if it were a loss. Least recently active first, so this stops at
        the first recent session. Returns the lines forgotten (not counted as evicted)."""
        horizon = now_us - self.config.lookback_us - SWEEP_MARGIN_US
        sessions, suppressed = self.sessions, self.suppressed
        lines = 0
        while sessions:
            key, st = next(iter(sessions.items()))
            newest = st.buf[-1].max_ts if st.buf else 0
            if newest >= horizon or st.follow_until >= now_us or key in suppressed:
                break
            del sessions[key]
            lines += st.lines
            self.shared.buffered_bytes -= st.bytes
        return lines

    def drop(self) -> None:
        """Forget every session (the partition was revoked): its memory returns to the budget."""
        for st in self.sessions.values():
            self.shared.buffered_bytes -= st.bytes
        self.sessions.clear()

    def lines(self) -> int:
        return sum(st.lines for st in list(self.sessions.values()))
