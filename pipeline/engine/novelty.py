"""The template catalog of one process and the novel_template trigger's decision.

Each line's template id (ingest sets it, see templates.py) is looked up under its scope: the service,
or the service and endpoint. A known template only has its counts updated (one dict lookup, on the
engine's fast path); a template not seen within the horizon is novel. A novel line fires when the
trigger is on for its service (setting, or a rule's novelty action, which may also set the service's
scope), the learning period after the
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

    __slots__ = ("count", "dirty", "endpoint", "example", "first_us", "last_us", "levels", "service",
                 "template", "template_id", "triggered")  # fmt: skip

    def __init__(self, service: str, endpoint: str, template_id: str, ts: int) -> None:
        self.service = service
        self.endpoint = endpoint  # "" when templates are new per service
        self.template_id = template_id
        self.first_us = ts
        self.last_us = ts
        self.count = 0  # since the last delta
        self.levels: dict[str, int] = {}
        self.example = ""  # set for templates learned here (their first line), with the template
        self.template = ""
        self.triggered = False
        self.dirty = False  # counted since the last delta


class Catalog:
    """Templates per scope, known since when, and the trigger's learning period and budget."""

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.by_endpoint = config.novel_template_scope == "endpoint"
        self.rules = RuleSet()
        self._endpoint_scoped: dict[str, bool] = {}  # per service: its scope, by the rules or the setting
        self.horizon_us = config.novel_template_horizon_us
        # scope (the service, or service NUL endpoint) -> template id -> entry: nested, so a line's
        # lookup builds no key object
        self.entries: dict[str, dict[str, Entry]] = {}
        self.dirty: list[Entry] = []  # counted since the last delta
        self.size = 0  # entries in all scopes
        self.evicted = 0  # entries dropped to stay within templates_max
        self.learning_until = -1  # event time; set by the first line
        self.fired: dict[str, deque[int]] = {}  # per service: event times of recent firings
        self.suppressed = 0  # novel templates beyond a budget
        self.novel = 0  # templates learned here (novel lines)

    def __len__(self) -> int:
        return self.size

    def set_rules(self, rules: RuleSet) -> None:
        """Rules changed: a service's scope (a novelty rule may set it) is decided again."""
        self.rules = rules
        self._endpoint_scoped = {}

    def endpoint_scoped(self, service: str) -> bool:
        """Whether the service's templates are new per endpoint: its novelty rule's scope ("service" or
        "endpoint"), else the setting. Cached per service."""
        scoped = self._endpoint_scoped.get(service)
        if scoped is None:
            mode = self.rules.novelty_for(service) if self.rules.novelty else None
            scoped = self.by_endpoint if mode not in ("service", "endpoint") else mode == "endpoint"
            self._endpoint_scoped[service] = scoped
        return scoped

    def scope_of(self, service: str, endpoint: str | None) -> str:
        return f"{service}\x00{endpoint or ''}" if self.endpoint_scoped(service) else service

    def known(self, service: str, endpoint: str | None, level: str, template_id: str, ts: int) -> bool:
        """Count the line under its template; False when the template is novel (not seen within the
        horizon): the caller then treats the line as one that may trigger and calls learn().
        The engine's fast path, every line: two dict lookups and three counts (~0.5 us measured
        against the same worker without the catalog, bench/worker_throughput.py)."""
        scoped = self._endpoint_scoped.get(service)
        if scoped is None:
            scoped = self.endpoint_scoped(service)
        by = self.entries.get(f"{service}\x00{endpoint or ''}" if scoped else service)
        if by is None:
            return False
        entry = by.get(template_id)
        if entry is None or ts - entry.last_us > self.horizon_us:
            return False
        if ts > entry.last_us:
            entry.last_us = ts
        entry.count += 1
        levels = entry.levels
        levels[level] = levels.get(level, 0) + 1
        if not entry.dirty:
            entry.dirty = True
            self.dirty.append(entry)
        return True

    def learn(self, rec: LogRecord, template_id: str, ts: int) -> Entry:
        """A novel line's template, learned here from this line."""
        if self.learning_until < 0:  # the process's first line (a first line is always novel)
            self.learning_until = ts + self.config.novel_template_learning_us
        service = rec["service"]
        endpoint = (rec["endpoint"] or "") if self.endpoint_scoped(service) else ""
        entry = Entry(service, endpoint, template_id, ts)
        entry.example = rec["message"][:_EXAMPLE_CHARS]
        entry.template = mask(rec["message"])[:_EXAMPLE_CHARS]
        entry.count = 1
        entry.levels[rec["level"]] = 1
        self._put(entry)
        self.novel += 1
        return entry

    def _put(self, entry: Entry) -> None:
        scope = self.scope_of(entry.service, entry.endpoint)
        by = self.entries.get(scope)
        if by is None:
            by = self.entries[scope] = {}
        old = by.get(entry.template_id)
        if old is not None and old.dirty:  # seen before the horizon: its last counts still go out
            entry.count += old.count
            for level, n in old.levels.items():
                entry.levels[level] = entry.levels.get(level, 0) + n
            self.dirty.remove(old)
        by[entry.template_id] = entry
        entry.dirty = True
        self.dirty.append(entry)
        if old is None:
            self._grow()

    def learn_remote(self, service: str, scope: str, template_id: str, ts: int) -> None:
        """Another process learned this template (from the shared log): known here from now on."""
        key = self.scope_of(service, scope or None)
        by = self.entries.get(key)
        if by is None:
            by = self.entries[key] = {}
        entry = by.get(template_id)
        if entry is None:
            by[template_id] = Entry(service, scope, template_id, ts)
            self._grow()
        elif ts > entry.last_us:
            entry.last_us = ts

    def _grow(self) -> None:
        """One entry was added; past templates_max the tenth least recently seen go. Messages whose
        variable parts are words (user names, say) make a template each: the catalog stays bounded,
        at worst forgetting rare shapes early (they may then fire again, within the budget)."""
        self.size += 1
        if self.size <= self.config.templates_max:
            return
        everything = [(e.last_us, scope, tid) for scope, by in self.entries.items() for tid, e in by.items()]
        everything.sort()
        for _, scope, tid in everything[: max(len(everything) // 10, 1)]:
            entry = self.entries[scope].pop(tid)
            if entry.dirty:
                entry.dirty = False
                self.dirty.remove(entry)
            if not self.entries[scope]:
                del self.entries[scope]
            self.size -= 1
            self.evicted += 1

    def fires(self, entry: Entry, ts: int, rules: RuleSet) -> bool:
        """Whether a novel template (just learned) fires the trigger: on for the service (a rule's
        novelty action, else the setting), past the learning period, within the service's budget.
        Counts what the budget suppressed."""
        service = entry.service
        mode = rules.novelty_for(service) if rules.novelty else None
        on = self.config.novel_template if mode is None else mode != "off"
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
        entry.triggered = True
        return True

    def take_deltas(self) -> list[dict[str, Any]]:
        """What changed since the last call, as stats records of kind "template" (the store sums them)."""
        out = []
        for entry in self.dirty:
            out.append(
                {
                    "kind": "template",
                    "service": entry.service,
                    "endpoint": entry.endpoint,
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
            entry.example = entry.template = ""  # sent once; the store keeps the longest (max)
            entry.dirty = False
        self.dirty = []
        return out

    def forget(self, now_us: int) -> None:
        """Templates not seen within the horizon are forgotten (memory stays bounded)."""
        horizon = now_us - self.horizon_us
        for scope in list(self.entries):
            by = self.entries[scope]
            for tid in [t for t, e in by.items() if e.last_us < horizon and not e.dirty]:
                del by[tid]
                self.size -= 1
            if not by:
                del self.entries[scope]
