"""The engines of one process, one per raw partition, and what they share. Time is event time (the
records' timestamps), so re-reading logs.raw after a restart rebuilds the same state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pipeline.engine.model import Emission, WindowConfig, WindowMetrics
from pipeline.engine.partition import Engine
from pipeline.engine.shared import Shared
from pipeline.rules.compiled import RuleSet
from pipeline.types import LogRecord


class Hindsight:
    """The engines of one process (one per raw partition) and their shared state."""

    def __init__(self, config: WindowConfig, decode_line: Callable[[bytes], LogRecord] | None = None) -> None:
        """`decode_line` turns a line's encoded form (given to process_message) back into its record:
        with it, buffered lines are kept encoded and decoded only when emitted."""
        self.config = config
        self.shared = Shared(config, decode_line)
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
        encoded: list[bytes] | None = None,
    ) -> Emission:
        """The decoded lines of one raw message; idx gives their positions when some were rejected;
        `encoded`, beside `records`, their encoded forms (buffered instead of the records)."""
        eng = self.engine(topic, partition)
        eng.active = True
        em = eng.process(offset, records, idx, replay, encoded)
        for cap in em.captures:
            # Lines of that endpoint already buffered in other partitions, since the capture began.
            # Those partitions are live even when this one is being rebuilt: they may hold lines the
            # previous owner of this one never saw, so their matches are emitted (a repeat of a line
            # the previous owner did send is one row in the store, which dedups by line id).
            for other in self.engines.values():
                if other is not eng:
                    other.apply_capture(cap, em, False)
            eng.apply_capture(cap, em, replay)
        return em

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition that moved away; its counters stay in the totals."""
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
        return sum(e.buffers.lines() for e in list(self.engines.values()))

    def effective_lookback_us(self) -> int:
        """The shortest lookback a trigger in any partition can count on now (evictions cut it)."""
        engines = list(self.engines.values())
        if not engines:
            return self.config.lookback_us
        return min(e.buffers.effective_lookback_us() for e in engines)

    def buffered_bytes(self) -> int:
        return self.shared.buffered_bytes
