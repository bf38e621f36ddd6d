"""The engine of one raw partition: the line loop (a fast path for quiet lines), what each line that
may matter decides, and emission: triggered lookback, follow-up, captures, baseline, rule actions."""

from __future__ import annotations

from typing import Any

from pipeline.engine.budget import Budget
from pipeline.engine.buffers import ENTRY_OVERHEAD, Buffers, Chunk, Session
from pipeline.engine.columns import columns_of
from pipeline.engine.curate import curate
from pipeline.engine.model import (
    CAPTURE_FIELDS,
    LEVEL_VALUE,
    SCOPE_FIELD,
    Capture,
    Emission,
    Trigger,
    WindowMetrics,
    line_id,
)
from pipeline.engine.shared import Shared
from pipeline.engine.sketch import LatencySketch, index_values
from pipeline.engine.stats import WindowStats
from pipeline.engine.triggers import ENDPOINT_CAPTURE_REASONS, Triggers
from pipeline.rules.compiled import Compiled, RuleSet, Verdict
from pipeline.rules.model import CaptureAction
from pipeline.types import Columns, CuratedRecord, LineView, LogRecord

_UNKNOWN = object()  # the rules' verdict on a line was not evaluated yet


class Engine:
    """The state of one raw partition (a session lives in one partition, so its state does too)."""

    def __init__(self, topic: str, partition: int, shared: Shared) -> None:
        self.topic = topic
        self.partition = partition
        self.shared = shared
        self.config = shared.config
        self.metrics = WindowMetrics()
        self.budget = Budget(self.config, shared.global_bucket, self.metrics, topic, partition)
        self.buffers = Buffers(self.config, shared, self.metrics, self.budget.burst, self.budget.pending)
        self.sessions = self.buffers.sessions
        self.triggers = Triggers(self.config, shared)
        self.stats = WindowStats(self.config, shared, self.metrics, partition)
        # An IntEnum's .value is a Python-level property: read per message group it was 3-5% of the
        # worker's main thread (py-spy), so the int is kept here.
        self.baseline_value = self.config.baseline_level.value
        self.watermark = 0
        self.active = False
        self.idle_ticks = 0
        # auth failures reported to the shared log, awaiting its count: id -> (key, chunk, pos, time)
        self.reported: dict[str, tuple[str, Chunk, int, int]] = {}

    # ---- the line loop ---------------------------------------------------------------------
    def process(
        self,
        offset: int,
        lines: list[LineView],
        idx: list[int] | None = None,
        replay: bool = False,
        encoded: list[bytes] | None = None,
    ) -> Emission:
        """The lines of one raw message, in order; idx gives their positions when some were rejected;
        `encoded` (beside `lines`) their encoded forms, which the buffers keep instead of the lines."""
        if not lines:
            return Emission()
        templates = self.shared.templates if self.config.templates else None
        cols = columns_of(lines, idx, encoded, self.config.timeout_attribute, templates)
        return self.process_columns(offset, cols, replay)

    def process_columns(self, offset: int, cols: Columns, replay: bool = False) -> Emission:
        """The lines of one message as columns, grouped by session (ingest writes them so)."""
        if cols.timeout_attribute != self.config.timeout_attribute:
            raise ValueError(
                f"columns flag timeouts by attribute {cols.timeout_attribute!r}, "
                f"the engine by {self.config.timeout_attribute!r}"
            )
        if cols.body is not None and cols.decode is None and self.shared.decode_line is None:
            raise ValueError("an encoded body needs a line decoder")
        em = Emission()
        start = 0
        for key, count in zip(cols.keys, cols.counts, strict=True):
            if count:
                self._group(em, key, offset, cols, start, start + count, replay)
            start += count
        self.budget.flush(em, self.watermark, replay, force=False)
        return em

    def _chunk(self, offset: int, cols: Columns, a: int, b: int) -> Chunk:
        """Lines a..b-1 of `cols` as they are buffered: one slice of the encoded body when there is one."""
        ts = cols.timestamp[a:b]
        decode = self.shared.decode_line
        body, ends = cols.body, cols.ends
        if body is not None and ends is not None:
            lead = ends[a - 1] + 1 if a else 1  # after the comma before the group's first line, or "["
            blob = body[lead : ends[b - 1]]
            return Chunk(
                offset, ts, None, None, None, cols.decode or decode, blob, ends, cols.origins, a, lead
            )
        views = cols.views
        assert views is not None
        idx, encoded = cols.idx, cols.encoded
        return Chunk(
            offset,
            ts,
            views[a:b],
            idx[a:b] if idx is not None else None,
            encoded[a:b] if encoded is not None and decode is not None else None,
            decode,
        )

    def _group(
        self, em: Emission, key: str, offset: int, cols: Columns, a: int, b: int, replay: bool
    ) -> None:
        """Lines a..b-1 of `cols`: one session's lines of one message."""
        cfg = self.config
        self.metrics.lines_in += b - a
        buffers = self.buffers
        buffers.now_us = self.watermark
        st = buffers.session(key)
        chunk = self._chunk(offset, cols, a, b)
        tss, levels_, services, endpoints = cols.timestamp, cols.level, cols.service, cols.endpoint
        users, latencies, statuses, flags = cols.user_id, cols.latency_ms, cols.status_code, cols.flags
        tids, sizes = cols.template_id, cols.size
        newest = tss[a]
        if st.slow_pending:  # a pending slow-session check may still centre a window on the slow line
            newest = min(newest, st.slow_at)
        buffers.expire(st, newest - cfg.lookback_us)
        st.buf.append(chunk)
        st.lines += b - a
        window = cfg.stats_window_us
        stats = self.stats
        rules = self.shared.rules
        floor = self._floor(rules)
        triggers = self.triggers  # a native method call when compiled (a bound-method alias is not)
        ep_caps, user_caps, svc_caps = [self.shared.captures[f] for f in CAPTURE_FIELDS]
        catalog = self.shared.catalog if cfg.templates else None
        match = rules.match if rules else None
        levels = LEVEL_VALUE
        run_win = -1
        run_ep: str | None = None
        run_n = run_bytes = 0
        run_lats: list[float] = []
        chunk_bytes = max_ts = 0
        for i in range(a, b):
            pos = i - a
            ts = tss[i]
            if ts > max_ts:
                max_ts = ts
                if ts > self.watermark:
                    self.watermark = ts
                    if ts >= stats.next_close_at:
                        if run_n:
                            self._add_run(st, key, offset, run_win, run_ep, run_n, run_bytes, run_lats)
                            run_n = run_bytes = 0
                            run_lats = []
                            run_win = -1
                        stats.close(em, replay, self.watermark, self.watermark)
            size = sizes[i]
            chunk_bytes += size
            endpoint = endpoints[i]
            level = levels_[i]
            severity = levels[level]
            latency = latencies[i]
            # rules are evaluated once per line, on its record (custom matchers take a dict)
            found = match(chunk.rec(pos)) if match is not None else None
            # every line counts under its template (ingest set its id); a novel one may trigger
            novel = False
            tid = ""
            if catalog is not None:
                tid = tids[i]
                novel = not catalog.known(services[i], endpoint, level, tid, ts)
            if (
                novel
                or found
                or severity >= floor
                or ts <= st.follow_until
                or triggers.may_fire(severity, latency, statuses[i], flags[i], st)
                or (ep_caps and endpoint in ep_caps)
                or (user_caps and users[i] in user_caps)
                or (svc_caps and services[i] in svc_caps)
            ):
                if run_n:
                    self._add_run(st, key, offset, run_win, run_ep, run_n, run_bytes, run_lats)
                    run_n = run_bytes = 0
                    run_lats = []
                    run_win = -1
                self._line(em, key, st, chunk, pos, size, floor, found, replay, tid if novel else None)
                continue
            # the fast path: the line only joins its session's buffer and a run of window statistics
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
        chunk.bytes = chunk.encoded_bytes() if chunk.compact else chunk_bytes + ENTRY_OVERHEAD * (b - a)
        if chunk.compact:
            chunk.seal(_uniform(endpoints, users, services, a, b))
        st.bytes += chunk.bytes
        self.shared.buffered_bytes += chunk.bytes
        buffers.now_us = self.watermark
        buffers.bound(st)

    def _floor(self, rules: RuleSet) -> int:
        """The level stored without a trigger: the dynamic default level if one is set, else the baseline."""
        return rules.default_level if rules.default_level is not None else self.baseline_value

    def _line(
        self,
        em: Emission,
        key: str,
        st: Session,
        chunk: Chunk,
        pos: int,
        size: int,
        floor: int,
        found: list[Compiled] | None,
        replay: bool,
        novel_template: str | None = None,
    ) -> None:
        """One line that may trigger, match rules (`found`) or be emitted, with exact per-line semantics;
        `novel_template`: the id of its template when the catalog did not know it."""
        cfg = self.config
        rec = chunk.rec(pos)
        ts = rec["timestamp"]
        novel = False
        if novel_template is not None:
            shared = self.shared
            learned = shared.catalog.learn(rec, novel_template, ts)
            shared.learned_template(learned, ts)
            novel = shared.catalog.fires(learned, ts, shared.rules)
        severity = LEVEL_VALUE[rec["level"]]
        endpoint = rec["endpoint"]
        latency = rec["latency_ms"]
        self._line_stats(
            st, key, chunk.offset, ts, endpoint, severity >= self.triggers.level_gate, size, latency
        )
        verdict = self.shared.rules.decided(found) if found else None
        if verdict is not None:
            if verdict.stats_ids:
                self.stats.rule(ts, verdict.stats_ids, matched=len(rec["message"]))
            if verdict.drop:
                m = self.metrics
                m.dropped += 1
                size = len(rec["message"])
                for rule_id in verdict.rule_ids:
                    m.dropped_by_rule[rule_id] = m.dropped_by_rule.get(rule_id, 0) + 1
                    m.dropped_bytes_by_rule[rule_id] = m.dropped_bytes_by_rule.get(rule_id, 0) + size
                chunk.mark(pos)  # never stored, not even by a later trigger
                return
            if verdict.level is not None:
                floor = verdict.level
        triggers = self.triggers
        reasons = triggers.reasons(st, rec, ts, severity, endpoint, latency)
        if novel:
            reasons.append("novel_template")
        if triggers.auth_to_report:
            # reported in a rebuild too: the previous owner's report may never have reached the log
            # (the count ignores a repeat), and Hindsight.refire needs the line's place
            triggers.auth_to_report = False
            self._report_auth(key, chunk, pos, rec, ts)
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
                anchor = self.triggers.anchor(st, ts, reasons)
                since = anchor - lookback_us
                # the session's capture window: this trigger's, joined to the last one's if they touch
                st.follow_since = since if st.follow_until < since else min(st.follow_since, since)
                st.trigger = trig
                st.follow_until = max(st.follow_until, anchor + follow_us)
                self._emit_buffered(em, key, st, chunk, pos, reasons, trig, replay, since, st.follow_until)
            if endpoint and any(r in reasons for r in ENDPOINT_CAPTURE_REASONS):
                security = Trigger(trig.id, trig.offset, ("security",))
                em.captures.append(
                    self.shared.capture("endpoint", endpoint, ts, ts + cfg.follow_us, security, not replay)
                )
            for rule_id, action in scoped:
                fieldname = SCOPE_FIELD[action.scope]
                value = rec[fieldname]  # type: ignore[literal-required]
                if value:
                    since, until = ts - int(action.lookback_s * 1e6), ts + int(action.follow_s * 1e6)
                    rule_trig = Trigger(trig.id, trig.offset, (f"rule:{rule_id}",))
                    em.captures.append(
                        self.shared.capture(fieldname, value, since, until, rule_trig, not replay)
                    )
            if chunk.pending(pos) and (not reasons or st.follow_since <= ts <= st.follow_until):
                self._emit(em, key, st, chunk, pos, all_reasons, trig, replay, verdict)
        elif st.trigger is not None and st.follow_since <= ts <= st.follow_until:
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

    # ---- auth failures decided on the shared log ------------------------------------------------
    def _report_auth(self, key: str, chunk: Chunk, pos: int, rec: LogRecord, ts: int) -> None:
        """An auth failure, for the shared log: every process counts them in the log's order, and the
        one whose line completes a count fires (fire_reported), so it fires once for all processes."""
        ref = line_id(chunk.line(self.topic, self.partition, pos))
        self.reported[ref] = (key, chunk, pos, ts)
        self.shared.outbox.append(
            {
                "kind": "auth",
                "user": rec["user_id"],
                "ts": ts,
                "ref": ref,
                "topic": self.topic,
                "partition": self.partition,
            }
        )

    def fire_reported(self, ref: str, em: Emission) -> None:
        """The shared log says this process's auth failure `ref` completed a user's count: the trigger
        fires on that line now, with the session's lines from lookback before it to follow after it
        (the lines that came since are buffered), and captures its endpoint everywhere."""
        entry = self.reported.pop(ref, None)
        if entry is None:
            return
        key, chunk, pos, ts = entry
        st = self.sessions.get(key)
        if st is None or not st.buf:
            return  # evicted meanwhile: counted in evicted_sessions
        cfg = self.config
        self.metrics.triggers += 1
        line = chunk.line(self.topic, self.partition, pos)
        trig = Trigger(f"t-{line_id(line)}", chunk.offset, ("auth_failures",))
        since = ts - cfg.lookback_us
        st.follow_since = since if st.follow_until < since else min(st.follow_since, since)
        st.trigger = trig
        st.follow_until = max(st.follow_until, ts + cfg.follow_us)
        last = st.buf[-1]
        self._emit_buffered(
            em, key, st, last, last.count - 1, ["auth_failures"], trig, False, since, st.follow_until
        )
        endpoint = line.record["endpoint"]
        if endpoint:
            security = Trigger(trig.id, trig.offset, ("security",))
            em.captures.append(self.shared.capture("endpoint", endpoint, ts, ts + cfg.follow_us, security))

    # ---- emission ----------------------------------------------------------------------------
    def _emit_buffered(
        self,
        em: Emission,
        key: str,
        st: Session,
        upto: Chunk,
        upto_pos: int,
        reasons: list[str],
        trig: Trigger,
        replay: bool,
        since_us: int,
        until_us: int,
    ) -> None:
        """A trigger: every buffered line of the session in [since_us, until_us] not yet emitted, up to
        it. The upper bound matters when lines arrive out of order: a line buffered before the
        trigger can be later than its follow-up window."""
        for chunk in st.buf:
            if chunk.max_ts and chunk.max_ts < since_us:
                continue
            end = upto_pos + 1 if chunk is upto else chunk.count
            for pos in range(chunk.start, end):
                if since_us <= chunk.timestamp(pos) <= until_us and chunk.pending(pos):
                    self._emit(em, key, st, chunk, pos, reasons, trig, replay)
            if chunk is upto:
                break

    def _emit(
        self,
        em: Emission,
        key: str,
        st: Session,
        chunk: Chunk,
        pos: int,
        reasons: list[str],
        trig: Any,
        replay: bool,
        verdict: Verdict | object | None = _UNKNOWN,
    ) -> None:
        """Emit one buffered line (within budget); `verdict` when the caller already evaluated the rules."""
        chunk.mark(pos)
        ts = chunk.timestamp(pos)
        line = chunk.line(self.topic, self.partition, pos)
        if not self.budget.allow(st.bucket, ts):
            self.budget.suppress(key, line, reasons, replay)
            return
        if replay:
            return
        record = curate(line, reasons, trig, self.config.retention_days)
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
            self.stats.rule(ts, verdict.stats_ids, emitted=len(record["message"]))

    def apply_capture(self, cap: Capture, em: Emission, replay: bool = False) -> None:
        """A new capture: emit this partition's buffered lines of its endpoint/user/service since it began."""
        fieldname, value = cap.field, cap.value
        which = CAPTURE_FIELDS.index(fieldname)
        since, until = cap.since_us, cap.until_us
        for key, st in self.sessions.items():
            for chunk in st.buf:
                if chunk.max_ts and chunk.max_ts < since:
                    continue
                # a sealed chunk whose lines share the field: skipped or taken whole, nothing decoded
                keys = chunk.keys
                if keys is not None and keys[which] != value:
                    continue
                for pos in range(chunk.start, chunk.count):
                    if not (since <= chunk.timestamp(pos) <= until and chunk.pending(pos)):
                        continue
                    if keys is None and chunk.rec(pos)[fieldname] != value:  # type: ignore[literal-required]
                        continue
                    self._emit(em, key, st, chunk, pos, list(cap.trigger.reasons), cap.trigger, replay)

    # ---- window statistics -------------------------------------------------------------------
    def _line_stats(
        self,
        st: Session,
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
            st.enter_window(win, self.stats.session(key, win))
        sketch = None
        if latency is not None:
            sketch = LatencySketch()
            sketch.add(latency)
        st.stats.add(offset, 1, int(error), size, sketch)
        if endpoint:
            ew = self.stats.endpoint(win, endpoint)
            if ew is not None:
                ew.add(offset, 1, int(error), size, sketch)

    def _add_run(
        self,
        st: Session,
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
            st.enter_window(win, self.stats.session(key, win))
        stats = st.stats
        stats.add(offset, count, 0, size, None)
        indexed = index_values(latencies) if latencies else None  # one log per value for both sketches
        if indexed is not None:
            stats.sketch.add_indexed(*indexed)
        if endpoint:
            ew = self.stats.endpoint(win, endpoint)
            if ew is not None:
                ew.add(offset, count, 0, size, None)
                if indexed is not None:
                    ew.sketch.add_indexed(*indexed)

    # ---- housekeeping ------------------------------------------------------------------------
    def tick(self, now_us: int, idle: bool) -> Emission:
        """Wall-clock housekeeping: when the partition went quiet, close all its windows; flush summaries."""
        em = Emission()
        if self.reported:  # the log's answer is due within a second; older ones cannot fire anymore
            horizon = self.watermark - self.config.lookback_us
            for ref in [r for r, entry in self.reported.items() if entry[3] < horizon]:
                del self.reported[ref]
        self.buffers.sweep(self.watermark)
        if idle and self.stats.any_open():
            cfg = self.config
            horizon = max(self.watermark, now_us) + cfg.stats_grace_us + cfg.stats_window_us
            self.stats.close(em, False, horizon, self.watermark)
        self.budget.flush(em, self.watermark, False, force=True)
        return em

    def drop(self) -> None:
        """Forget this partition (revoked): its memory returns to the budget."""
        self.buffers.drop()


def _uniform(
    endpoints: list[str | None], users: list[str | None], services: list[str], a: int, b: int
) -> tuple[str | None, str | None, str] | None:
    """(endpoint, user_id, service) of lines a..b-1 when all of them have the same, else None."""
    ep, user, svc = endpoints[a], users[a], services[a]
    for i in range(a + 1, b):
        if endpoints[i] != ep or users[i] != user or services[i] != svc:
            return None
    return (ep, user, svc)
