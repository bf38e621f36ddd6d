"""Windows and triggers: per-session lookback buffers, follow-up capture, endpoint captures, window
statistics, emission budgets. Pure logic: no Kafka or Faust imports.

One `Engine` per raw partition (a session lives in one partition, so its state does too); a
`Hindsight` per process holds the engines and what they share: endpoint captures, endpoint latency
baselines, the memory budget and the global emission budget. Time is event time (the records'
timestamps), so re-reading logs.raw after a restart rebuilds the same state.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from pipeline.engine.sketch import LatencySketch, index_values
from pipeline.rules.model import CaptureAction, Compiled, RuleSet, Verdict
from pipeline.types import CuratedRecord, Level, LogRecord, RawLine, session_key

log = logging.getLogger(__name__)

LEVEL_VALUE = {level.name: level.value for level in Level}
CAPTURE_FIELDS = ("endpoint", "user_id", "service")
_UNKNOWN = object()  # the rules' verdict on a line was not evaluated yet
SCOPE_FIELD = {"endpoint": "endpoint", "user": "user_id", "service": "service"}
ENTRY_OVERHEAD = 1600  # bytes per buffered line beyond its message (bench measures ~1.9 KB in all)


@dataclass
class WindowConfig:
    """What the windows keep, what triggers a capture and how much may be emitted."""

    lookback_us: int = 60_000_000
    follow_us: int = 30_000_000
    session_max_lines: int = 2000
    session_max_bytes: int = 1_048_576
    memory_budget_bytes: int = 256 * 1_048_576
    max_sessions: int = 100_000
    trigger_level: Level = Level.ERROR
    baseline_level: Level = Level.WARN
    latency_floor_ms: float = 1000.0
    latency_factor: float = 3.0
    slow_session_p95_ms: float = 5000.0
    slow_session_min_lines: int = 5
    timeout_status: frozenset[int] = frozenset({408, 504})
    timeout_attribute: str = "timeout"
    auth_fail_status: frozenset[int] = frozenset({401, 403})
    auth_fail_count: int = 5
    stats_window_us: int = 60_000_000
    stats_grace_us: int = 30_000_000
    stats_idle_close_s: int = 5
    slowest_sessions: int = 10
    key_budget_lps: float = 2000.0
    global_budget_lps: float = 50_000.0
    budget_burst_s: float = 5.0
    retention_days: int = 30


@dataclass
class WindowMetrics:
    """Counters (exported as hindsight_*_total)."""

    lines_in: int = 0
    lines_emitted: int = 0
    triggers: int = 0
    baseline: int = 0
    evicted_lines: int = 0
    evicted_sessions: int = 0
    suppressed_lines: int = 0
    summaries: int = 0
    stats_records: int = 0
    late_stats: int = 0
    dropped: int = 0
    bytes_emitted: int = 0  # message bytes of emitted lines: the cost side of the accounting
    by_reason: dict[str, int] = field(default_factory=dict)
    bytes_by_reason: dict[str, int] = field(default_factory=dict)
    lines_by_rule: dict[str, int] = field(default_factory=dict)
    bytes_by_rule: dict[str, int] = field(default_factory=dict)
    dropped_by_rule: dict[str, int] = field(default_factory=dict)
    dropped_bytes_by_rule: dict[str, int] = field(default_factory=dict)

    def add(self, other: WindowMetrics) -> None:
        for name in ("lines_in", "lines_emitted", "triggers", "baseline", "evicted_lines", "evicted_sessions",
                     "suppressed_lines", "summaries", "stats_records", "late_stats", "dropped",
                     "bytes_emitted"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("by_reason", "bytes_by_reason", "lines_by_rule", "bytes_by_rule", "dropped_by_rule",
                     "dropped_bytes_by_rule"):  # fmt: skip
            mine: dict[str, int] = getattr(self, name)
            for key, n in dict(getattr(other, name)).items():  # copy: another thread may be adding
                mine[key] = mine.get(key, 0) + n


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why and where a capture started."""

    id: str
    offset: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Capture:
    """Every line whose `field` equals `value` (an endpoint, user or service) captured for
    [since, until] (event time)."""

    field: str
    value: str
    since_us: int
    until_us: int
    trigger: Trigger


@dataclass
class Emission:
    """What processing some lines produced."""

    curated: dict[str, list[CuratedRecord]] = field(default_factory=dict)
    stats: list[dict[str, Any]] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)

    def merge(self, other: Emission) -> None:
        for key, rows in other.curated.items():
            self.curated.setdefault(key, []).extend(rows)
        self.stats.extend(other.stats)
        self.captures.extend(other.captures)

    def lines(self) -> int:
        return sum(len(v) for v in self.curated.values())


def line_id(line: RawLine) -> str:
    """Deterministic id of a raw line: topic, partition, offset and position in its batch."""
    return f"{line.topic}:{line.partition}:{line.offset}:{line.index}"


def curate(
    line: RawLine, reasons: list[str], trigger: RawLine | Trigger | None, retention_days: int
) -> CuratedRecord:
    """The curated form of a raw line."""
    record: CuratedRecord = {**line.record}  # type: ignore[typeddict-item]
    _set_curated(
        record, line.topic, line.partition, line.offset, line.index, reasons, trigger, retention_days
    )
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
        _set_curated(row, topic, partition, offset, index, list(reasons), trigger, retention_days)
        row["tags"] = list(tags)
        rows.append(row)
    return rows


def _set_curated(
    record: CuratedRecord,
    topic: str,
    partition: int,
    offset: int,
    index: int,
    reasons: list[str],
    trigger: RawLine | Trigger | None,
    retention_days: int,
) -> None:
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


class _Chunk:
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
        index = pos if self.idx is None else self.idx[pos]
        return RawLine(self.recs[pos], topic, partition, self.offset, index)

    def pending(self, pos: int) -> bool:
        return self.emitted is None or pos not in self.emitted


def _line_size(rec: LogRecord) -> int:
    return len(rec["message"]) + ENTRY_OVERHEAD


class _Bucket:
    """Token bucket refilled by event time."""

    __slots__ = ("last_us", "tokens")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.last_us = 0

    def take(self, now_us: int, rate: float, burst: float) -> bool:
        if now_us > self.last_us:
            if self.last_us:
                self.tokens = min(burst, self.tokens + (now_us - self.last_us) / 1e6 * rate)
            self.last_us = now_us
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Stats:
    """count, errors, bytes, latency sketch, first/last raw offsets of one window."""

    __slots__ = ("bytes", "count", "errors", "first_offset", "last_offset", "sketch")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.bytes = 0
        self.sketch = LatencySketch()
        self.first_offset = -1
        self.last_offset = -1

    def add(self, offset: int, count: int, errors: int, size: int, sketch: LatencySketch | None) -> None:
        """Add `count` lines of one raw message (a run of lines or a single one)."""
        self.count += count
        self.errors += errors
        self.bytes += size
        if sketch is not None:
            self.sketch.merge(sketch)
        if self.first_offset < 0:
            self.first_offset = offset
        self.last_offset = offset

    def row(self) -> dict[str, Any]:
        s = self.sketch
        p50, p95, p99 = s.quantiles((0.5, 0.95, 0.99))
        return {
            "count": self.count,
            "errors": self.errors,
            "bytes": self.bytes,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "latency_count": s.count,
            "sketch": s.to_dict(),
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
        }


def _slowest(sessions: dict[str, _Stats], n: int) -> list[tuple[str, _Stats]]:
    """The n sessions with the highest p95 latency (ties: first seen).

    A sketch's p95 never exceeds its max, so sessions are visited by max, highest first, and the
    search stops once the next max cannot beat the n-th p95 found: few quantiles get computed.
    """
    by_max = sorted(
        ((s.sketch.max, k, s) for k, s in sessions.items() if s.sketch.count), key=lambda t: -t[0]
    )
    best: list[tuple[float, int, str, _Stats]] = []  # (p95, order, key, stats)
    for order, (top, key, stats) in enumerate(by_max):
        if len(best) >= n and top < best[-1][0]:
            break
        p95 = stats.sketch.quantile(0.95) or 0.0
        best.append((p95, order, key, stats))
        best.sort(key=lambda t: (-t[0], t[1]))
        del best[n:]
    return [(key, stats) for _, _, key, stats in best]


class _Session:
    __slots__ = (
        "bucket",
        "buf",
        "bytes",
        "follow_until",
        "lines",
        "slow_fired",
        "slow_pending",
        "stats",
        "suppressed",
        "trigger",
        "win",
    )

    def __init__(self, burst: float) -> None:
        self.buf: deque[_Chunk] = deque()
        self.lines = 0
        self.bytes = 0
        self.follow_until = -1
        self.trigger: Trigger | None = None
        self.bucket = _Bucket(burst)
        self.suppressed: dict[str, Any] | None = None
        self.win = -1
        self.stats = _Stats()
        self.slow_fired = False
        # a slow line came before the window had slow_session_min_lines: check each line until it has
        self.slow_pending = False


class Shared:
    """What the engines of one process share."""

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        # captures by record field, then value: endpoint (security, rules), user_id and service (rules)
        self.captures: dict[str, dict[str, Capture]] = {f: {} for f in CAPTURE_FIELDS}
        self.rules = RuleSet()
        self.baselines: dict[str, tuple[int, LatencySketch]] = {}
        self._p95: dict[str, float | None] = {}  # baselines' p95, computed when a baseline changes
        self.buffered_bytes = 0
        self.global_bucket = _Bucket(config.global_budget_lps * config.budget_burst_s)

    def baseline_p95(self, endpoint: str) -> float | None:
        if endpoint not in self._p95:
            entry = self.baselines.get(endpoint)
            self._p95[endpoint] = entry[1].quantile(0.95) if entry else None
        return self._p95[endpoint]

    def close_baseline(self, endpoint: str, window_start: int, sketch: LatencySketch) -> None:
        current = self.baselines.get(endpoint)
        if current is None or current[0] < window_start:
            merged = LatencySketch().merge(sketch)
            self.baselines[endpoint] = (window_start, merged)
            self._p95.pop(endpoint, None)
        elif current[0] == window_start:
            current[1].merge(sketch)  # another partition's part of the same window
            self._p95.pop(endpoint, None)

    def capture_for(self, rec: LogRecord, ts: int) -> Capture | None:
        for fieldname, caps in self.captures.items():
            if caps:
                value = rec[fieldname]  # type: ignore[literal-required]
                cap = caps.get(value) if value else None
                if cap is not None and cap.since_us <= ts <= cap.until_us:
                    return cap
        return None

    def expire_captures(self, now_us: int) -> None:
        """Forget captures that ended (event time) a follow period ago, so their lines take the fast path."""
        horizon = now_us - self.config.follow_us
        for caps in self.captures.values():
            for value in [v for v, c in caps.items() if c.until_us < horizon]:
                del caps[value]


class Engine:
    """The state of one raw partition."""

    def __init__(self, topic: str, partition: int, shared: Shared) -> None:
        self.topic = topic
        self.partition = partition
        self.shared = shared
        self.config = shared.config
        self.metrics = WindowMetrics()
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self.auth_failures: dict[str, deque[int]] = {}
        self.endpoint_windows: dict[tuple[int, str], _Stats] = {}
        self.rule_windows: dict[tuple[int, str], list[int]] = {}
        self.session_windows: dict[int, dict[str, _Stats]] = {}
        self.watermark = 0
        self.closed_until = -1  # windows starting at or before this were emitted; later lines are late
        self.active = False
        self.idle_ticks = 0
        self._next_close_at = 0  # watermark at which some open window becomes closable
        self._pending: dict[str, _Session] = {}  # keys with suppressed lines awaiting a summary
        self.burst = self.config.key_budget_lps * self.config.budget_burst_s
        cfg = self.config
        # A line below all of these gates can neither trigger nor be emitted by itself: it only
        # joins its session's buffer and a run of window statistics (the fast path).
        self._level_gate = min(cfg.trigger_level.value, cfg.baseline_level.value)
        self._latency_gate = min(cfg.latency_floor_ms, cfg.slow_session_p95_ms)
        self._status_gate = cfg.timeout_status | cfg.auth_fail_status

    # ---- the line loop ---------------------------------------------------------------------
    def process(
        self, offset: int, records: list[LogRecord], idx: list[int] | None = None, replay: bool = False
    ) -> Emission:
        """The lines of one raw message, in order; idx gives their positions when some were rejected."""
        em = Emission()
        if not records:
            return em
        sid = records[0]["session_id"]
        if sid and all(r["session_id"] == sid for r in records):
            self._group(em, sid, offset, records, idx, replay)  # one session per message: the usual case
        else:
            # lines of many sessions: the publisher batches per partition
            groups: dict[str, list[LogRecord]] = {}
            where: dict[str, list[int]] = {}
            positions = range(len(records)) if idx is None else idx
            for pos, rec in zip(positions, records, strict=True):
                key = rec["session_id"] or session_key(rec)
                group = groups.get(key)
                if group is None:
                    groups[key] = [rec]
                    where[key] = [pos]
                else:
                    group.append(rec)
                    where[key].append(pos)
            for key, recs in groups.items():
                self._group(em, key, offset, recs, where[key], replay)
        self._flush_summaries(em, replay, force=False)
        return em

    def _group(
        self, em: Emission, key: str, offset: int, recs: list[LogRecord], idx: list[int] | None, replay: bool
    ) -> None:
        cfg = self.config
        self.metrics.lines_in += len(recs)
        st = self._session(key)
        chunk = _Chunk(offset, recs, idx)
        self._expire(st, recs[0]["timestamp"] - cfg.lookback_us)
        st.buf.append(chunk)
        st.lines += len(recs)
        window = cfg.stats_window_us
        rules = self.shared.rules
        floor = self._floor(rules)
        level_gate = min(cfg.trigger_level.value, floor)
        latency_gate, status_gate = self._latency_gate, self._status_gate
        timeout_attr = cfg.timeout_attribute
        ep_caps, user_caps, svc_caps = [self.shared.captures[f] for f in CAPTURE_FIELDS]
        match = rules.match if rules else None
        levels = LEVEL_VALUE
        run_win = -1
        run_ep: str | None = None
        run_n = run_bytes = 0
        run_lats: list[float] = []
        chunk_bytes = max_ts = 0
        for pos, rec in enumerate(recs):
            ts = rec["timestamp"]
            if ts > max_ts:
                max_ts = ts
                if ts > self.watermark:
                    self.watermark = ts
                    if ts >= self._next_close_at:
                        if run_n:
                            self._add_run(st, key, offset, run_win, run_ep, run_n, run_bytes, run_lats)
                            run_n = run_bytes = 0
                            run_lats = []
                            run_win = -1
                        self._close_windows(em, replay)
            size = len(rec["message"])
            chunk_bytes += size
            latency = rec["latency_ms"]
            endpoint = rec["endpoint"]
            status = rec["status_code"]
            attrs = rec["attributes"]
            found = match(rec) if match is not None else None  # rules are evaluated once per line
            if (
                found
                or levels[rec["level"]] >= level_gate
                or (latency is not None and latency > latency_gate)
                or (status is not None and status in status_gate)
                or rec["security_flags"]
                or (attrs and timeout_attr in attrs)
                or ts <= st.follow_until
                or st.slow_pending
                or (ep_caps and endpoint in ep_caps)
                or (user_caps and rec["user_id"] in user_caps)
                or (svc_caps and rec["service"] in svc_caps)
            ):
                if run_n:
                    self._add_run(st, key, offset, run_win, run_ep, run_n, run_bytes, run_lats)
                    run_n = run_bytes = 0
                    run_lats = []
                    run_win = -1
                self._line(em, key, st, chunk, pos, size, floor, found, replay)
                continue
            win = ts - ts % window
            if win != run_win or endpoint != run_ep:
                if run_n:
                    self._add_run(st, key, offset, run_win, run_ep, run_n, run_bytes, run_lats)
                    run_n = run_bytes = 0
                    run_lats = []
                run_win = win
                run_ep = endpoint
            run_n += 1
            run_bytes += size
            if latency is not None:
                run_lats.append(latency)
        if run_n:
            self._add_run(st, key, offset, run_win, run_ep, run_n, run_bytes, run_lats)
        chunk.max_ts = max_ts
        chunk.bytes = chunk_bytes + ENTRY_OVERHEAD * len(recs)
        st.bytes += chunk.bytes
        self.shared.buffered_bytes += chunk.bytes
        self._bound(st)

    def _floor(self, rules: RuleSet) -> int:
        """The level stored without a trigger: the dynamic default level if one is set, else the baseline."""
        return rules.default_level if rules.default_level is not None else self.config.baseline_level.value

    def _line(
        self,
        em: Emission,
        key: str,
        st: _Session,
        chunk: _Chunk,
        pos: int,
        size: int,
        floor: int,
        found: list[Compiled] | None,
        replay: bool,
    ) -> None:
        """One line that may trigger, match rules (`found`) or be emitted, with exact per-line semantics."""
        cfg = self.config
        rec = chunk.recs[pos]
        ts = rec["timestamp"]
        severity = LEVEL_VALUE[rec["level"]]
        endpoint = rec["endpoint"]
        latency = rec["latency_ms"]
        self._stats(st, key, chunk.offset, ts, endpoint, severity >= cfg.trigger_level.value, size, latency)
        verdict = self.shared.rules.decided(found) if found else None
        if verdict is not None:
            if verdict.stats_ids:
                self._rule_stats(ts, verdict.stats_ids, matched=len(rec["message"]))
            if verdict.drop:
                m = self.metrics
                m.dropped += 1
                size = len(rec["message"])
                for rule_id in verdict.rule_ids:
                    m.dropped_by_rule[rule_id] = m.dropped_by_rule.get(rule_id, 0) + 1
                    m.dropped_bytes_by_rule[rule_id] = m.dropped_bytes_by_rule.get(rule_id, 0) + size
                chunk.emitted = chunk.emitted or set()
                chunk.emitted.add(pos)  # never stored, not even by a later trigger
                return
            if verdict.level is not None:
                floor = verdict.level
        reasons = self._reasons(st, rec, ts, severity, endpoint, latency)
        lookback_us, follow_us = cfg.lookback_us, cfg.follow_us
        scoped: list[tuple[str, CaptureAction]] = []
        if verdict is not None and verdict.captures:
            for rule_id, action in verdict.captures:
                if action.scope == "session":
                    if not reasons:
                        lookback_us, follow_us = 0, 0
                    reasons.append(f"rule:{rule_id}")
                    lookback_us = max(lookback_us, int(action.lookback_s * 1e6))
                    follow_us = max(follow_us, int(action.follow_s * 1e6))
                else:
                    scoped.append((rule_id, action))
        if reasons or scoped:
            self.metrics.triggers += 1
            all_reasons = reasons + [f"rule:{rule_id}" for rule_id, _ in scoped]
            trig = Trigger(
                f"t-{line_id(chunk.line(self.topic, self.partition, pos))}", chunk.offset, tuple(all_reasons)
            )
            if reasons:
                st.trigger = trig
                st.follow_until = max(st.follow_until, ts + follow_us)
                self._emit_buffered(em, key, st, chunk, pos, reasons, trig, replay, since_us=ts - lookback_us)
            if endpoint and ("security" in reasons or "auth_failures" in reasons):
                security = Trigger(trig.id, trig.offset, ("security",))
                em.captures.append(
                    self.shared_capture("endpoint", endpoint, ts, ts + cfg.follow_us, security)
                )
            for rule_id, action in scoped:
                fieldname = SCOPE_FIELD[action.scope]
                value = rec[fieldname]  # type: ignore[literal-required]
                if value:
                    since, until = ts - int(action.lookback_s * 1e6), ts + int(action.follow_s * 1e6)
                    rule_trig = Trigger(trig.id, trig.offset, (f"rule:{rule_id}",))
                    em.captures.append(self.shared_capture(fieldname, value, since, until, rule_trig))
            if chunk.pending(pos):
                self._emit(em, key, st, chunk, pos, all_reasons, trig, replay, verdict)
        elif st.trigger is not None and ts <= st.follow_until:
            self._emit(em, key, st, chunk, pos, list(st.trigger.reasons), st.trigger, replay, verdict)
        else:
            cap = self.shared.capture_for(rec, ts)
            if cap is not None:
                self._emit(em, key, st, chunk, pos, list(cap.trigger.reasons), cap.trigger, replay, verdict)
            elif severity >= floor:
                self.metrics.baseline += 1
                reason = (
                    f"rule:{verdict.level_rule}" if verdict is not None and verdict.level_rule else "baseline"
                )
                self._emit(em, key, st, chunk, pos, [reason], None, replay, verdict)

    def _reasons(
        self, st: _Session, rec: Any, ts: int, severity: int, endpoint: str | None, latency: float | None
    ) -> list[str]:
        cfg = self.config
        reasons = []
        if severity >= cfg.trigger_level.value:
            reasons.append("error")
        if latency is not None and latency > cfg.latency_floor_ms:
            base = self.shared.baseline_p95(endpoint) if endpoint else None
            if base is None or latency > cfg.latency_factor * base:
                reasons.append("latency")
        count = st.stats.count
        if (
            not st.slow_fired
            and latency is not None
            and (latency > cfg.slow_session_p95_ms or st.slow_pending)
        ):
            if count < cfg.slow_session_min_lines:
                st.slow_pending = True
            else:
                st.slow_pending = False
                p95 = st.stats.sketch.quantile(0.95)
                if p95 is not None and p95 > cfg.slow_session_p95_ms:
                    st.slow_fired = True
                    reasons.append("slow_session")
        status = rec["status_code"]
        attrs = rec["attributes"]
        if status in cfg.timeout_status or (attrs and cfg.timeout_attribute in attrs):
            reasons.append("timeout")
        if rec["security_flags"]:
            reasons.append("security")
        if status in cfg.auth_fail_status and rec["user_id"]:
            fails = self.auth_failures.setdefault(rec["user_id"], deque())
            fails.append(ts)
            while fails and fails[0] < ts - cfg.lookback_us:
                fails.popleft()
            if len(fails) >= cfg.auth_fail_count:
                fails.clear()
                reasons.append("auth_failures")
        return reasons

    # ---- emission ----------------------------------------------------------------------------
    def _emit_buffered(
        self,
        em: Emission,
        key: str,
        st: _Session,
        upto: _Chunk,
        upto_pos: int,
        reasons: list[str],
        trig: Trigger,
        replay: bool,
        since_us: int,
    ) -> None:
        """A trigger: every buffered line of the session since `since_us` not yet emitted, up to it."""
        for chunk in st.buf:
            if chunk.max_ts and chunk.max_ts < since_us:
                continue
            recs = chunk.recs
            end = upto_pos + 1 if chunk is upto else len(recs)
            for pos in range(chunk.start, end):
                if recs[pos]["timestamp"] >= since_us and chunk.pending(pos):
                    self._emit(em, key, st, chunk, pos, reasons, trig, replay)
            if chunk is upto:
                break

    def _emit(
        self,
        em: Emission,
        key: str,
        st: _Session,
        chunk: _Chunk,
        pos: int,
        reasons: list[str],
        trig: Any,
        replay: bool,
        verdict: Verdict | object | None = _UNKNOWN,
    ) -> None:
        """Emit one buffered line (within budget); `verdict` when the caller already evaluated the rules."""
        if chunk.emitted is None:
            chunk.emitted = set()
        chunk.emitted.add(pos)
        ts = chunk.recs[pos]["timestamp"]
        cfg = self.config
        line = chunk.line(self.topic, self.partition, pos)
        if not (
            st.bucket.take(ts, cfg.key_budget_lps, self.burst)
            and self.shared.global_bucket.take(
                ts, cfg.global_budget_lps, cfg.global_budget_lps * cfg.budget_burst_s
            )
        ):
            self._suppress(key, st, line, reasons, replay)
            return
        if replay:
            return
        record = curate(line, reasons, trig, cfg.retention_days)
        if verdict is _UNKNOWN:
            rules = self.shared.rules
            verdict = rules.verdict(line.record) if rules else None
        if isinstance(verdict, Verdict):
            self._annotate(record, verdict, ts)
        em.curated.setdefault(key, []).append(record)
        m = self.metrics
        m.lines_emitted += 1
        size = len(record["message"])
        m.bytes_emitted += size
        for reason in reasons:
            m.by_reason[reason] = m.by_reason.get(reason, 0) + 1
            m.bytes_by_reason[reason] = m.bytes_by_reason.get(reason, 0) + size
        if isinstance(verdict, Verdict):
            for rule_id in verdict.rule_ids:
                m.lines_by_rule[rule_id] = m.lines_by_rule.get(rule_id, 0) + 1
                m.bytes_by_rule[rule_id] = m.bytes_by_rule.get(rule_id, 0) + size

    def _annotate(self, record: CuratedRecord, verdict: Verdict, ts: int) -> None:
        """What the matching rules add to a kept line: ids, tags, attributes, retention, routes."""
        record["rule_ids"] = verdict.rule_ids
        if verdict.tags:
            record["tags"] = list(verdict.tags)
        if verdict.attributes:
            record["attributes"] = {**record["attributes"], **verdict.attributes}
        if verdict.retention_days is not None:
            record["retention_days"] = verdict.retention_days
        if verdict.routes:
            record["routes"] = list(verdict.routes)
        if verdict.stats_ids:
            self._rule_stats(ts, verdict.stats_ids, emitted=len(record["message"]))

    def _rule_stats(self, ts: int, rule_ids: tuple[str, ...], matched: int = -1, emitted: int = -1) -> None:
        """Per rule and window: [matches, matched bytes, lines emitted, bytes emitted]."""
        cfg = self.config
        win = ts - ts % cfg.stats_window_us
        if win <= self.closed_until:
            self.metrics.late_stats += 1
            return
        for rule_id in rule_ids:
            counts = self.rule_windows.get((win, rule_id))
            if counts is None:
                counts = self.rule_windows[(win, rule_id)] = [0, 0, 0, 0]
                self._next_close_at = min(self._next_close_at, win + cfg.stats_grace_us + cfg.stats_window_us)
            if matched >= 0:
                counts[0] += 1
                counts[1] += matched
            if emitted >= 0:
                counts[2] += 1
                counts[3] += emitted

    def _suppress(self, key: str, st: _Session, line: RawLine, reasons: list[str], replay: bool) -> None:
        if not replay:
            self.metrics.suppressed_lines += 1
        s = st.suppressed
        if s is None:
            self._pending[key] = st
            s = st.suppressed = {"lines": 0, "levels": {}, "reasons": {}, "first": line, "last": line}
        s["lines"] += 1
        level = line.record["level"]
        s["levels"][level] = s["levels"].get(level, 0) + 1
        for reason in reasons:
            s["reasons"][reason] = s["reasons"].get(reason, 0) + 1
        s["last"] = line

    def _flush_summaries(self, em: Emission, replay: bool, force: bool) -> None:
        """Emit a summary per key whose suppressed lines are at least 1 s (event time) old."""
        if not self._pending:
            return
        for key, st in list(self._pending.items()):
            s = st.suppressed
            if s is None:
                del self._pending[key]
                continue
            if not force and self.watermark - s["first"].record["timestamp"] < 1_000_000:
                continue
            st.suppressed = None
            del self._pending[key]
            if replay:
                continue
            self.metrics.summaries += 1
            em.curated.setdefault(key, []).append(self._summary(key, s))

    def _summary(self, key: str, s: dict[str, Any]) -> CuratedRecord:
        last: RawLine = s["last"]
        first: RawLine = s["first"]
        attrs = {
            "hindsight.summary.lines": str(s["lines"]),
            "hindsight.summary.key": key,
            "hindsight.summary.first_offset": str(first.offset),
            "hindsight.summary.last_offset": str(last.offset),
        }
        attrs.update({f"hindsight.summary.level.{k}": str(v) for k, v in s["levels"].items()})
        attrs.update({f"hindsight.summary.reason.{k}": str(v) for k, v in s["reasons"].items()})
        rec = last.record
        summary_line = RawLine(
            {
                **rec,
                "level": "WARN",
                "severity_number": Level.WARN.value,
                "attributes": attrs,
                "security_flags": [],
                "message": f"hindsight: {s['lines']} lines over the emission budget summarised for {key}",
                "latency_ms": None,
                "status_code": None,
            },
            f"{self.topic}#summary",
            self.partition,
            last.offset,
            last.index,
        )
        return curate(summary_line, ["summary"], None, self.config.retention_days)

    def apply_capture(self, cap: Capture, em: Emission, replay: bool = False) -> None:
        """A new capture: emit this partition's buffered lines of its endpoint/user/service since it began."""
        fieldname, value = cap.field, cap.value
        for key, st in self.sessions.items():
            for chunk in st.buf:
                if chunk.max_ts and chunk.max_ts < cap.since_us:
                    continue
                recs = chunk.recs
                for pos in range(chunk.start, len(recs)):
                    rec = recs[pos]
                    if (
                        rec[fieldname] == value  # type: ignore[literal-required]
                        and cap.since_us <= rec["timestamp"] <= cap.until_us
                        and chunk.pending(pos)
                    ):
                        self._emit(em, key, st, chunk, pos, list(cap.trigger.reasons), cap.trigger, replay)

    def shared_capture(self, fieldname: str, value: str, since: int, until: int, trig: Trigger) -> Capture:
        """Start or extend the capture of every line with this endpoint/user/service, in all partitions."""
        caps = self.shared.captures[fieldname]
        current = caps.get(value)
        if current is not None and current.until_us >= since:
            since, until = min(since, current.since_us), max(until, current.until_us)
        cap = caps[value] = Capture(fieldname, value, since, until, trig)
        return cap

    # ---- buffers and bounds ---------------------------------------------------------------
    def _session(self, key: str) -> _Session:
        st = self.sessions.get(key)
        if st is None:
            st = self.sessions[key] = _Session(self.burst)
            if len(self.sessions) > self.config.max_sessions:
                self._evict_oldest()
        else:
            self.sessions.move_to_end(key)
        return st

    def _evict_oldest(self) -> None:
        key, st = next(iter(self.sessions.items()))
        if st.suppressed is not None:
            return  # keep it until its summary is out: nothing leaves silently
        del self.sessions[key]
        self.metrics.evicted_sessions += 1
        self.metrics.evicted_lines += st.lines
        self.shared.buffered_bytes -= st.bytes

    def _bound(self, st: _Session) -> None:
        """Per-session line and byte bounds, then the process memory budget (idle sessions first)."""
        cfg = self.config
        while st.lines > cfg.session_max_lines or (st.bytes > cfg.session_max_bytes and st.lines > 1):
            self._drop_first(st)
            self.metrics.evicted_lines += 1
        shared, sessions, budget = self.shared, self.sessions, cfg.memory_budget_bytes
        if shared.buffered_bytes <= budget:
            return
        # At high rates this is the steady state (every line is buffered, then evicted): the loop is
        # inlined, with the least recently active sessions leaving first.
        evicted = lines = 0
        while shared.buffered_bytes > budget and len(sessions) > 1:
            key, oldest = sessions.popitem(last=False)
            if oldest.suppressed is not None:  # kept until its summary is out: nothing leaves silently
                sessions[key] = oldest
                sessions.move_to_end(key, last=False)
                break
            evicted += 1
            lines += oldest.lines
            shared.buffered_bytes -= oldest.bytes
        self.metrics.evicted_sessions += evicted
        self.metrics.evicted_lines += lines

    def _drop_first(self, st: _Session) -> None:
        chunk = st.buf[0]
        size = _line_size(chunk.recs[chunk.start])
        chunk.start += 1
        chunk.bytes -= size
        st.lines -= 1
        st.bytes -= size
        self.shared.buffered_bytes -= size
        if chunk.start == len(chunk.recs):
            st.buf.popleft()

    def _expire(self, st: _Session, oldest_us: int) -> None:
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
                self._drop_first(st)
                if not buf or buf[0] is not chunk:
                    break
            return

    def drop(self) -> None:
        """Forget this partition (revoked): its memory returns to the budget."""
        for st in self.sessions.values():
            self.shared.buffered_bytes -= st.bytes
        self.sessions.clear()

    # ---- window statistics -------------------------------------------------------------------
    def _session_window(self, st: _Session, key: str, win: int) -> None:
        cfg = self.config
        st.win = win
        windows = self.session_windows.get(win)
        if windows is None:
            windows = self.session_windows[win] = {}
            self._next_close_at = min(self._next_close_at, win + cfg.stats_grace_us + cfg.stats_window_us)
        st.stats = windows.setdefault(key, _Stats())
        st.slow_fired = False
        st.slow_pending = False

    def _endpoint_window(self, win: int, endpoint: str) -> _Stats | None:
        if win <= self.closed_until:
            self.metrics.late_stats += 1  # its window was already emitted; counting it would split the row
            return None
        ew = self.endpoint_windows.get((win, endpoint))
        if ew is None:
            ew = self.endpoint_windows[(win, endpoint)] = _Stats()
            cfg = self.config
            self._next_close_at = min(self._next_close_at, win + cfg.stats_grace_us + cfg.stats_window_us)
        return ew

    def _stats(
        self,
        st: _Session,
        key: str,
        offset: int,
        ts: int,
        endpoint: str | None,
        error: bool,
        size: int,
        latency: float | None,
    ) -> None:
        """One line's share of its session and endpoint windows."""
        win = ts - ts % self.config.stats_window_us
        if st.win != win:
            self._session_window(st, key, win)
        sketch = None
        if latency is not None:
            sketch = LatencySketch()
            sketch.add(latency)
        st.stats.add(offset, 1, int(error), size, sketch)
        if endpoint:
            ew = self._endpoint_window(win, endpoint)
            if ew is not None:
                ew.add(offset, 1, int(error), size, sketch)

    def _add_run(
        self,
        st: _Session,
        key: str,
        offset: int,
        win: int,
        endpoint: str | None,
        count: int,
        size: int,
        latencies: list[float],
    ) -> None:
        """A run of quiet lines (same window and endpoint, no errors) of one message, added at once."""
        if st.win != win:
            self._session_window(st, key, win)
        stats = st.stats
        stats.add(offset, count, 0, size, None)
        indexed = index_values(latencies) if latencies else None  # one log per value for both sketches
        if indexed is not None:
            stats.sketch.add_indexed(*indexed)
        if endpoint:
            ew = self._endpoint_window(win, endpoint)
            if ew is not None:
                ew.add(offset, count, 0, size, None)
                if indexed is not None:
                    ew.sketch.add_indexed(*indexed)

    def _close_windows(self, em: Emission, replay: bool, now_us: int | None = None) -> None:
        cfg = self.config
        limit = (now_us if now_us is not None else self.watermark) - cfg.stats_grace_us - cfg.stats_window_us
        if not self.endpoint_windows and not self.session_windows and not self.rule_windows:
            return
        before = len(em.stats)
        self.closed_until = max(self.closed_until, limit)
        span = cfg.stats_grace_us + cfg.stats_window_us
        for win_key in [k for k in self.endpoint_windows if k[0] <= limit]:
            stats = self.endpoint_windows.pop(win_key)
            win, endpoint = win_key
            self.shared.close_baseline(endpoint, win, stats.sketch)
            if not replay:
                em.stats.append(
                    {
                        "kind": "endpoint",
                        "window_start_us": win,
                        "window_end_us": win + cfg.stats_window_us,
                        "endpoint": endpoint,
                        "partition": self.partition,
                        **stats.row(),
                    }
                )
        for win in [w for w in self.session_windows if w <= limit]:
            sessions = self.session_windows.pop(win)
            if replay:
                continue
            ranked = _slowest(sessions, cfg.slowest_sessions)
            for rank, (k, s) in enumerate(ranked, start=1):
                em.stats.append(
                    {
                        "kind": "slow_session",
                        "window_start_us": win,
                        "window_end_us": win + cfg.stats_window_us,
                        "session": k,
                        "rank": rank,
                        "partition": self.partition,
                        **s.row(),
                    }
                )
        for win_key in [k for k in self.rule_windows if k[0] <= limit]:
            matches, matched_bytes, emitted, emitted_bytes = self.rule_windows.pop(win_key)
            if not replay:
                em.stats.append(
                    {
                        "kind": "rule",
                        "window_start_us": win_key[0],
                        "window_end_us": win_key[0] + cfg.stats_window_us,
                        "rule_id": win_key[1],
                        "partition": self.partition,
                        "matches": matches,
                        "matched_bytes": matched_bytes,
                        "lines_emitted": emitted,
                        "bytes_emitted": emitted_bytes,
                    }
                )
        self.metrics.stats_records += len(em.stats) - before
        starts = (
            [k[0] for k in self.endpoint_windows]
            + list(self.session_windows)
            + [k[0] for k in self.rule_windows]
        )
        self._next_close_at = (min(starts) if starts else self.watermark) + span

    def tick(self, now_us: int, idle: bool) -> Emission:
        """Wall-clock housekeeping: when the partition went quiet, close all its windows; flush summaries."""
        em = Emission()
        if idle and (self.endpoint_windows or self.session_windows or self.rule_windows):
            cfg = self.config
            self._close_windows(
                em, False, now_us=max(self.watermark, now_us) + cfg.stats_grace_us + cfg.stats_window_us
            )
        self._flush_summaries(em, False, force=True)
        return em


class Hindsight:
    """The engines of one process (one per raw partition) and their shared state."""

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.shared = Shared(config)
        self.engines: dict[tuple[str, int], Engine] = {}
        self.retired = WindowMetrics()  # counters of engines whose partition moved away: they stay monotonic

    def engine(self, topic: str, partition: int) -> Engine:
        eng = self.engines.get((topic, partition))
        if eng is None:
            eng = self.engines[(topic, partition)] = Engine(topic, partition, self.shared)
        return eng

    def process_message(
        self,
        topic: str,
        partition: int,
        offset: int,
        records: list[LogRecord],
        idx: list[int] | None = None,
        replay: bool = False,
    ) -> Emission:
        """The decoded lines of one raw message; idx gives their positions when some were rejected."""
        eng = self.engine(topic, partition)
        eng.active = True
        em = eng.process(offset, records, idx, replay)
        for cap in em.captures:
            # lines of that endpoint already buffered in other partitions, since the capture began
            for other in self.engines.values():
                if other is not eng:
                    other.apply_capture(cap, em, replay)
            eng.apply_capture(cap, em, replay)
        return em

    def process(self, lines: list[RawLine], replay: bool = False) -> Emission:
        """RawLines in partition order; consecutive lines of one raw message are processed together."""
        em = Emission()
        i = 0
        while i < len(lines):
            first = lines[i]
            j = i + 1
            while (
                j < len(lines) and lines[j].offset == first.offset and lines[j].partition == first.partition
            ):
                j += 1
            run = lines[i:j]
            em.merge(
                self.process_message(
                    first.topic,
                    first.partition,
                    first.offset,
                    [ln.record for ln in run],
                    [ln.index for ln in run],
                    replay,
                )
            )
            i = j
        return em

    def drop(self, topic: str, partition: int) -> None:
        eng = self.engines.pop((topic, partition), None)
        if eng is not None:
            self.retired.add(eng.metrics)
            eng.drop()

    def set_rules(self, rules: RuleSet) -> None:
        """Swap in a new rule set (the worker's rule reader calls this; lines after it see the new rules)."""
        self.shared.rules = rules

    def tick(self, now_us: int) -> Emission:
        """Call about once a second (wall clock): idle engines close their old windows, rules whose time
        window opened or closed are re-indexed, finished captures are forgotten."""
        rules = self.shared.rules
        now = datetime.fromtimestamp(now_us / 1e6, UTC)
        if rules.rules and rules.changed_at(now):
            self.shared.rules = rules.at(now)
        if self.engines:
            self.shared.expire_captures(max(e.watermark for e in self.engines.values()))
        em = Emission()
        idle_ticks = self.config.stats_idle_close_s
        for eng in self.engines.values():
            eng.idle_ticks = 0 if eng.active else eng.idle_ticks + 1
            eng.active = False
            # a partition quiet for the grace period will not bring its open windows more lines soon
            em.merge(eng.tick(now_us, idle=eng.idle_ticks >= idle_ticks))
        return em

    @property
    def metrics(self) -> WindowMetrics:
        total = WindowMetrics()
        total.add(self.retired)
        for eng in list(self.engines.values()):
            total.add(eng.metrics)
        return total

    def sessions(self) -> int:
        return sum(len(e.sessions) for e in list(self.engines.values()))

    def buffered_lines(self) -> int:
        return sum(st.lines for e in list(self.engines.values()) for st in list(e.sessions.values()))

    def buffered(self, key: str) -> list[RawLine]:
        for eng in self.engines.values():
            st = eng.sessions.get(key)
            if st is not None:
                return [
                    c.line(eng.topic, eng.partition, p) for c in st.buf for p in range(c.start, len(c.recs))
                ]
        return []
