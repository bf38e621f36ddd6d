"""Emission budgets: a token bucket per session and one per process, refilled by event time; lines
over budget are counted into one summary record per session instead of being emitted."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.engine.curate import curate
from pipeline.engine.model import Emission, WindowConfig, WindowMetrics
from pipeline.types import CuratedRecord, Level, RawLine

SUMMARY_AFTER_US = 1_000_000  # a summary goes out once its first suppressed line is 1 s (event time) old


class Bucket:
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


@dataclass
class Suppressed:
    """The lines of one session held back by the budget since its last summary."""

    first: RawLine
    last: RawLine
    lines: int = 0
    levels: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)


class Budget:
    """The budgets of one partition; the process-wide bucket is shared by every partition."""

    def __init__(
        self, config: WindowConfig, global_bucket: Bucket, metrics: WindowMetrics, topic: str, partition: int
    ) -> None:
        self.config = config
        self.global_bucket = global_bucket
        self.metrics = metrics
        self.topic = topic
        self.partition = partition
        self.burst = config.key_budget_lps * config.budget_burst_s
        self.global_burst = config.global_budget_lps * config.budget_burst_s
        # keys with suppressed lines awaiting a summary; a session listed here is never evicted
        self.pending: dict[str, Suppressed] = {}

    def allow(self, bucket: Bucket, ts: int) -> bool:
        """One line at event time `ts`: within the session's and the process's budget?"""
        cfg = self.config
        return bucket.take(ts, cfg.key_budget_lps, self.burst) and self.global_bucket.take(
            ts, cfg.global_budget_lps, self.global_burst
        )

    def suppress(self, key: str, line: RawLine, reasons: list[str], replay: bool) -> None:
        if not replay:
            self.metrics.suppressed_lines += 1
        s = self.pending.get(key)
        if s is None:
            s = self.pending[key] = Suppressed(line, line)
        s.lines += 1
        level = line.record["level"]
        s.levels[level] = s.levels.get(level, 0) + 1
        for reason in reasons:
            s.reasons[reason] = s.reasons.get(reason, 0) + 1
        s.last = line

    def flush(self, em: Emission, watermark: int, replay: bool, force: bool) -> None:
        """Emit a summary per key whose suppressed lines are old enough (all of them when `force`)."""
        if not self.pending:
            return
        for key, s in list(self.pending.items()):
            if not force and watermark - s.first.record["timestamp"] < SUMMARY_AFTER_US:
                continue
            del self.pending[key]
            if replay:
                continue
            self.metrics.summaries += 1
            em.curated.setdefault(key, []).append(self.summary(key, s))

    def summary(self, key: str, s: Suppressed) -> CuratedRecord:
        """A WARN record standing for the suppressed lines: how many, their levels and reasons."""
        attrs = {
            "hindsight.summary.lines": str(s.lines),
            "hindsight.summary.key": key,
            "hindsight.summary.first_offset": str(s.first.offset),
            "hindsight.summary.last_offset": str(s.last.offset),
        }
        attrs.update({f"hindsight.summary.level.{k}": str(v) for k, v in s.levels.items()})
        attrs.update({f"hindsight.summary.reason.{k}": str(v) for k, v in s.reasons.items()})
        last = s.last
        summary_line = RawLine(
            {
                **last.record,
                "level": "WARN",
                "severity_number": Level.WARN.value,
                "attributes": attrs,
                "security_flags": [],
                "message": f"hindsight: {s.lines} lines over the emission budget summarised for {key}",
                "latency_ms": None,
                "status_code": None,
            },
            f"{self.topic}#summary",
            self.partition,
            last.offset,
            last.index,
        )
        return curate(summary_line, ["summary"], None, self.config.retention_days)
