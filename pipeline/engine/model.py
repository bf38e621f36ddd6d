"""The engine's data: window configuration, counters, triggers, captures and what processing emits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline.types import CuratedRecord, Level, LogRecord, RawLine

LEVEL_VALUE = {level.name: level.value for level in Level}
CAPTURE_FIELDS = ("endpoint", "user_id", "service")  # a capture selects lines by one of these fields
SCOPE_FIELD = {"endpoint": "endpoint", "user": "user_id", "service": "service"}  # a rule's scope -> field


@dataclass
class WindowConfig:
    """What the windows keep, what triggers a capture and how much may be emitted."""

    lookback_us: int = 60_000_000
    follow_us: int = 30_000_000
    session_max_lines: int = 2000
    session_max_bytes: int = 1_048_576
    memory_budget_bytes: int = 1536 * 1_048_576
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
    # the template catalog and the novel_template trigger (engine/novelty.py)
    templates: bool = True  # the catalog (off: no counting, no novel_template trigger)
    novel_template: bool = False
    novel_template_scope: str = "service"  # or "endpoint": a template is new per service and endpoint
    novel_template_horizon_us: int = 86_400_000_000
    novel_template_learning_us: int = 300_000_000
    novel_template_budget: int = 5
    novel_template_budget_window_us: int = 60_000_000
    templates_flush_us: int = 10_000_000
    templates_max: int = 200_000

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> WindowConfig:
        """Built from settings by name, so a new setting needs no hand-written copy: a field `x` takes
        `x`, `x_us` takes `x_s` (seconds), `x_bytes` takes `x_mb` (MiB), `retention_days` takes
        `default_retention_days`; Level fields accept level names. Fields without a setting keep
        their default."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.name
            if name in values:
                value = values[name]
            elif name.endswith("_us") and f"{name[:-3]}_s" in values:
                value = int(values[f"{name[:-3]}_s"] * 1_000_000)
            elif name.endswith("_bytes") and f"{name[:-6]}_mb" in values:
                value = int(values[f"{name[:-6]}_mb"] * 1_048_576)
            elif f"default_{name}" in values:
                value = values[f"default_{name}"]
            else:
                continue
            if isinstance(f.default, Level):
                value = Level.parse(value)
            kwargs[name] = value
        return cls(**kwargs)


_COUNTERS = (
    "lines_in", "lines_emitted", "triggers", "baseline", "evicted_lines", "evicted_sessions",
    "suppressed_lines", "summaries", "stats_records", "late_stats", "dropped", "bytes_emitted",
)  # fmt: skip
_BREAKDOWNS = (
    "by_reason", "bytes_by_reason", "lines_by_rule", "bytes_by_rule",
    "dropped_by_rule", "dropped_bytes_by_rule",
)  # fmt: skip


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
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _BREAKDOWNS:
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


def line_id(line: RawLine) -> str:
    """Deterministic id of a raw line: topic, partition, offset and position in its batch."""
    return f"{line.topic}:{line.partition}:{line.offset}:{line.index}"


class RecordLine:
    """A record given as a dict (lines decoded from logs.raw, tests) seen as a LineView: its fields
    read once. Lines of logs.sessions come as validated structs that are LineViews already."""

    __slots__ = (
        "attributes",
        "endpoint",
        "latency_ms",
        "level",
        "message",
        "rec",
        "security_flags",
        "service",
        "session_id",
        "status_code",
        "template_id",
        "timestamp",
        "transaction_id",
        "user_id",
    )

    def __init__(self, rec: LogRecord) -> None:
        self.rec = rec
        self.timestamp: int = rec["timestamp"]
        self.service: str = rec.get("service") or ""
        self.level: str = rec["level"]
        self.message: str = rec["message"]
        self.session_id: str | None = rec.get("session_id")
        self.transaction_id: str | None = rec.get("transaction_id")
        self.user_id: str | None = rec.get("user_id")
        self.endpoint: str | None = rec.get("endpoint")
        self.latency_ms: float | None = rec.get("latency_ms")
        self.status_code: int | None = rec.get("status_code")
        self.security_flags: list[str] = rec.get("security_flags") or []
        self.attributes: dict[str, str] = rec.get("attributes") or {}
        self.template_id: str | None = rec.get("template_id")

    def record(self) -> LogRecord:
        return self.rec
