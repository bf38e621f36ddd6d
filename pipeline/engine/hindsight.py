"""The engines of one process, one per raw partition, and what they share. Time is event time (the
records' timestamps), so re-reading logs.raw after a restart rebuilds the same state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline.engine.model import Emission, RecordLine, Trigger, WindowConfig, WindowMetrics
from pipeline.engine.partition import Engine
from pipeline.engine.shared import Shared
from pipeline.engine.sketch import LatencySketch
from pipeline.rules.compiled import RuleSet
from pipeline.types import Columns, LineView, LogRecord


class Hindsight:
    """The engines of one process (one per raw partition) and their shared state."""

    def __init__(
        self,
        config: WindowConfig,
        decode_line: Callable[[bytes], LogRecord] | None = None,
        origin: str | None = None,
    ) -> None:
        """`decode_line` turns a line's encoded form (given to process_message) back into its record:
        with it, buffered lines are kept encoded and decoded only when emitted. `origin` names this
        process on a log shared with other worker processes (see apply_shared)."""
        self.config = config
        self.shared = Shared(config, decode_line, origin)
        self.engines: dict[tuple[str, int], Engine] = {}
        self.retired = WindowMetrics()  # counters of engines whose partition moved away: they stay monotonic
        self.templates_flushed_us = 0  # wall clock of the last catalog delta

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
        encoded: list[bytes] | None = None,
    ) -> Emission:
        """The decoded lines of one raw message as records; idx gives their positions when some were
        rejected; `encoded`, beside `records`, their encoded forms (buffered instead of the records)."""
        lines: list[LineView] = [RecordLine(rec) for rec in records]
        return self.process_lines(topic, partition, offset, lines, idx, replay, encoded)

    def process_lines(
        self,
        topic: str,
        partition: int,
        offset: int,
        lines: list[LineView],
        idx: list[int] | None = None,
        replay: bool = False,
        encoded: list[bytes] | None = None,
    ) -> Emission:
        """process_message() of lines that are LineViews already (logs.sessions' validated structs:
        no dict is built for a line unless it may trigger, match a rule or be emitted)."""
        eng = self.engine(topic, partition)
        eng.active = True
        em = eng.process(offset, lines, idx, replay, encoded)
        self._spread(em, eng, replay)
        return em

    def process_columns(
        self, topic: str, partition: int, offset: int, cols: Columns, replay: bool = False
    ) -> Emission:
        """process_message() of lines given as columns (a framed logs.sessions message: no line is
        decoded unless it may trigger, match a rule or be emitted)."""
        eng = self.engine(topic, partition)
        eng.active = True
        em = eng.process_columns(offset, cols, replay)
        self._spread(em, eng, replay)
        return em

    def _spread(self, em: Emission, eng: Engine | None, replay: bool) -> None:
        """Captures `eng` opened, applied to every partition of the process."""
        for cap in em.captures:
            # Lines of that endpoint already buffered in other partitions, since the capture began.
            # Those partitions are live even when this one is being rebuilt: they may hold lines the
            # previous owner of this one never saw, so their matches are emitted (a repeat of a line
            # the previous owner did send is one row in the store, which dedups by line id).
            for other in self.engines.values():
                if other is not eng:
                    other.apply_capture(cap, em, False)
            if eng is not None:
                eng.apply_capture(cap, em, replay)

    def apply_shared(self, events: list[dict[str, Any]]) -> Emission:
        """Changes read from the log shared by all worker processes, in its order (each process reads
        all of it, its own changes included):
        - capture (endpoint, user or service, from another process): this process's buffered and
          coming lines of it, by event time, are emitted as if it had opened it;
        - baseline: another process's part of an endpoint's latency window;
        - auth: one auth failure of a user, from any process. Every process counts them in the
          log's order, so all reach the same decision at the same event; only the process whose
          line completed the count fires, so the trigger fires once for all of them."""
        em = Emission()
        shared = self.shared
        for ev in events:
            kind = ev["kind"]
            own = ev["origin"] == shared.origin
            if kind == "auth":
                ref = ev["ref"]
                shared.shared_auth_failure(ev["user"], ev["ts"], ref)
                # Fires when this failure completed a count, and on a repeat of one that did
                # (auth_fired holds both): the process that died after the log decided it may never
                # have committed its line, so the next owner's rebuild (and refire) stops before it
                # and the line comes to it live. fire_reported forgets the ref: a later repeat is nothing.
                if own and ref in shared.auth_fired:
                    eng = self.engines.get((ev["topic"], ev["partition"]))
                    if eng is not None:
                        eng.fire_reported(ref, em)
            elif own:
                continue  # applied here when it happened
            elif kind == "capture":
                trig = Trigger(ev["trigger_id"], ev["trigger_offset"], tuple(ev["reasons"]))
                cap = shared.capture(ev["field"], ev["value"], ev["since"], ev["until"], trig, False)
                for eng in self.engines.values():
                    eng.apply_capture(cap, em, False)
            elif kind == "baseline":
                sketch = LatencySketch.from_dict(ev["sketch"])
                shared.close_baseline(ev["endpoint"], ev["window"], sketch, False)
            elif kind == "template":
                shared.catalog.learn_remote(ev["service"], ev["scope"], ev["template_id"], ev["ts"])
        captures, em.captures = em.captures, []
        for cap in captures:  # opened by an auth-failure trigger fired here
            for eng in self.engines.values():
                eng.apply_capture(cap, em, False)
        em.captures = captures
        return em

    def refire(self, topic: str, partition: int) -> Emission:
        """After a partition's rebuild: auth-failure triggers the shared log decided on its lines (by a
        process that may have died before, or while, it emitted them) fire here, with emission on. The
        rebuild reported its replayed failures again, so each has its place in the buffers; a line
        sent twice is one row in the store."""
        em = Emission()
        eng = self.engines.get((topic, partition))
        if eng is None or self.shared.origin is None:
            return em
        for ref in [r for r in eng.reported if r in self.shared.auth_fired]:
            eng.fire_reported(ref, em)
        self._spread(em, eng, False)
        return em

    def take_outbox(self) -> list[dict[str, Any]]:
        """What changed here since the last call, for the shared log (empty without an origin)."""
        return self.shared.take_outbox()

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition that moved away; its counters stay in the totals."""
        eng = self.engines.pop((topic, partition), None)
        if eng is not None:
            self.retired.add(eng.metrics)
            eng.drop()

    def set_rules(self, rules: RuleSet) -> None:
        """Swap in a new rule set (the worker's rule reader calls this; lines after it see the new rules)."""
        self.shared.rules = rules
        self.shared.catalog.set_rules(rules)

    def tick(self, now_us: int) -> Emission:
        """Call about once a second (wall clock): idle engines close their old windows, rules whose time
        window opened or closed are re-indexed, finished captures are forgotten."""
        rules = self.shared.rules
        now = datetime.fromtimestamp(now_us / 1e6, UTC)
        if rules.rules and rules.changed_at(now):
            self.set_rules(rules.at(now))
        if self.engines:
            self.shared.expire_captures(max(e.watermark for e in self.engines.values()))
        em = Emission()
        if now_us - self.templates_flushed_us >= self.config.templates_flush_us:
            self.templates_flushed_us = now_us
            catalog = self.shared.catalog
            em.stats.extend(catalog.take_deltas())  # to hindsight.templates, through logs.stats
            if self.engines:
                catalog.forget(max(e.watermark for e in self.engines.values()))
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
        return sum(e.buffers.lines() for e in list(self.engines.values()))

    def effective_lookback_us(self) -> int:
        """The shortest lookback a trigger in any partition can count on now (evictions cut it)."""
        engines = list(self.engines.values())
        if not engines:
            return self.config.lookback_us
        return min(e.buffers.effective_lookback_us() for e in engines)

    def buffered_bytes(self) -> int:
        return self.shared.buffered_bytes
