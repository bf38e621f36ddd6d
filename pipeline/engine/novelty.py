"""The template catalog of one process and the novel_template trigger's decision.

Each line's template id (ingest sets it, see templates.py) is looked up under its scope: the service,
or the service and endpoint. A known template only has its counts updated (one dict lookup, on the
engine's fast path); a template not seen within the horizon is novel. A novel line fires when the
trigger is on for its service (setting, or a rule's novelty action), the learning period after the
process's first line is over (until then every template is learned, none fires) and the service's
budget allows it (at most `budget` firings per budget window: a deploy that changes every message
learns them all and captures a few; the rest are counted as suppressed, and the catalog keeps them).

With other worker processes, a template learned here is published on the shared log and learned by
every process from there (Hindsight.apply_shared), so a shape that reached one process does not fire
again in another; two processes that see a new shape within the log's delay (~0.2 s) both fire.
The catalog's counts leave as deltas (`take_deltas`, stats records of kind "template"), summed by
the store into hindsight.templates.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pipeline.engine.model import WindowConfig
from pipeline.engine.templates import mask
from pipeline.rules.compiled import RuleSet
from pipeline.types import LogRecord

_EXAMPLE_CHARS = 500


class Entry:
    """A template under one scope: when it was seen, how often, at which levels (since the last delta)."""

    __slots__ = ("count", "endpoint", "example", "first_us", "last_us", "levels", "service", "template",
                 "template_id", "triggered")  # fmt: skip

    def __init__(self, service: str, endpoint: str | None, template_id: str, ts: int) -> None:
        self.service = service
        self.endpoint = endpoint
        self.template_id = template_id
        self.first_us = ts
        self.last_us = ts
        self.count = 0  # since the last delta
        self.levels: dict[str, int] = {}
        self.example = ""  # set for templates learned here (their first line), with the template
        self.template = ""
        self.triggered = False


class Catalog:
    """Templates per scope, known since when, and the trigger's learning period and budget."""

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.by_endpoint = config.novel_template_scope == "endpoint"
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.dirty: dict[tuple[str, str, str], Entry] = {}  # counted since the last delta
        self.learning_until = -1  # event time; set by the first line
        self.fired: dict[str, deque[int]] = {}  # per service: event times of recent firings
        self.suppressed = 0  # novel templates beyond a budget
        self.novel = 0  # templates learned here (novel lines)

    def key(self, rec: LogRecord, template_id: str) -> tuple[str, str, str]:
        return (rec["service"], (rec["endpoint"] or "") if self.by_endpoint else "", template_id)

    def known(self, rec: LogRecord, template_id: str, ts: int) -> bool:
        """Count the line under its template; False when the template is novel (not seen within the
        horizon): the caller then treats the line as one that may trigger and calls learn().
        ~0.3 us a line (the engine's fast path): a tuple, a dict lookup, three counts."""
        if self.learning_until < 0:
            self.learning_until = ts + self.config.novel_template_learning_us
        key = (rec["service"], (rec["endpoint"] or "") if self.by_endpoint else "", template_id)
        entry = self.entries.get(key)
        if entry is None or ts - entry.last_us > self.config.novel_template_horizon_us:
            return False
        if ts > entry.last_us:
            entry.last_us = ts
        entry.count += 1
        level = rec["level"]
        entry.levels[level] = entry.levels.get(level, 0) + 1
        self.dirty[key] = entry
        return True

    def learn(self, rec: LogRecord, template_id: str, ts: int) -> tuple[str, str, str]:
        """A novel line's template, learned here from this line; returns its key."""
        key = self.key(rec, template_id)
        entry = Entry(key[0], key[1] or None, template_id, ts)
        entry.example = rec["message"][:_EXAMPLE_CHARS]
        entry.template = mask(rec["message"])[:_EXAMPLE_CHARS]
        entry.count = 1
        entry.levels[rec["level"]] = 1
        self.entries[key] = entry
        self.dirty[key] = entry
        self.novel += 1
        return key

    def learn_remote(self, service: str, scope: str, template_id: str, ts: int) -> None:
        """Another process learned this template (from the shared log): known here from now on."""
        key = (service, scope, template_id)
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = Entry(service, scope or None, template_id, ts)
        elif ts > entry.last_us:
            entry.last_us = ts

    def fires(self, service: str, key: tuple[str, str, str], ts: int, rules: RuleSet) -> bool:
        """Whether a novel template (just learned) fires the trigger: on for the service (a rule's
        novelty action, else the setting), past the learning period, within the service's budget.
        Counts what the budget suppressed."""
        by_rule = rules.novelty_for(service) if rules.novelty else None
        on = self.config.novel_template if by_rule is None else by_rule
        if not on or ts < self.learning_until:
            return False
        recent = self.fired.get(service)
        if recent is None:
            recent = self.fired[service] = deque()
        horizon = ts - self.config.novel_template_budget_window_us
        while recent and recent[0] < horizon:
            recent.popleft()
        if len(recent) >= self.config.novel_template_budget:
            self.suppressed += 1
            return False
        recent.append(ts)
        self.entries[key].triggered = True
        return True

    def take_deltas(self) -> list[dict[str, Any]]:
        """What changed since the last call, as stats records of kind "template" (the store sums them)."""
        out = []
        for entry in self.dirty.values():
            out.append(
                {
                    "kind": "template",
                    "service": entry.service,
                    "endpoint": entry.endpoint or "",
                    "template_id": entry.template_id,
                    "template": entry.template,
                    "example": entry.example,
                    "first_us": entry.first_us,
                    "last_us": entry.last_us,
                    "count": entry.count,
                    "levels": dict(entry.levels),
                    "triggered": entry.triggered,
                }
            )
            entry.count = 0
            entry.levels = {}
            entry.example = entry.template = ""  # sent once; the store keeps any
        self.dirty = {}
        return out

    def forget(self, now_us: int) -> None:
        """Templates not seen within the horizon are forgotten (memory stays bounded)."""
        horizon = now_us - self.config.novel_template_horizon_us
        stale = [k for k, e in self.entries.items() if e.last_us < horizon and k not in self.dirty]
        for key in stale:
            del self.entries[key]
