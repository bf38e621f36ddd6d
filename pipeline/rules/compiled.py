"""The compiled, indexed rule set: which rules match a line and what they decide (pure logic, no Kafka).

The worker feeds a `RuleSet` with the rules it reads from the compacted `hindsight.rules` topic;
the evaluation order is documented in pipeline.rules.model.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from pipeline.rules.model import (
    LEVEL_VALUE,
    AttrMatch,
    CaptureAction,
    Condition,
    Rule,
    RuleError,
    StrMatch,
)
from pipeline.rules.patterns import glob_matcher, searcher
from pipeline.types import Level, LogRecord

Predicate = Callable[[LogRecord], bool]

log = logging.getLogger(__name__)


def _str_predicate(fieldname: str, spec: str | StrMatch) -> Predicate:
    if isinstance(spec, str) or spec.exact is not None:
        value = spec if isinstance(spec, str) else spec.exact
        return lambda r: r[fieldname] == value  # type: ignore[literal-required]
    search = glob_matcher(spec.glob) if spec.glob is not None else searcher(str(spec.regex))
    return lambda r: (v := r[fieldname]) is not None and search(v) is not None  # type: ignore[literal-required]


def _all_of(checks: list[Predicate]) -> Predicate:
    def test(r: LogRecord) -> bool:
        for check in checks:  # noqa: SIM110 - a loop beats all() over a generator on this hot path
            if not check(r):
                return False
        return True

    return test


def _id_predicate(fieldname: str, values: frozenset[str]) -> Predicate:
    return lambda r: r[fieldname] in values  # type: ignore[literal-required]


def _attr_predicate(key: str, spec: AttrMatch) -> Predicate:
    if spec.exists is not None:
        want = spec.exists
        return lambda r: (key in r["attributes"]) is want
    if spec.equals is not None:
        value = spec.equals
        return lambda r: r["attributes"].get(key) == value
    search = searcher(str(spec.regex))
    return lambda r: (v := r["attributes"].get(key)) is not None and search(v) is not None


def load_custom(path: str) -> Predicate:
    module, _, name = path.partition(":")
    if any(part.startswith("_") for part in (*module.split("."), name)):
        raise RuleError([("custom", f"{path}: names starting with '_' cannot be used")])
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RuleError([("custom", f"cannot load {path}: {exc}")]) from None
    if not callable(fn):
        raise RuleError([("custom", f"{path} is not callable")])
    return fn  # type: ignore[no-any-return]


class CustomFaults:
    """Exceptions raised by custom predicates, per rule: counted (hindsight_rule_custom_errors_total)
    and logged at most once per rule and minute. A predicate that raises counts as "no match"."""

    def __init__(self, log_every_s: float = 60.0) -> None:
        self.by_rule: dict[str, int] = {}
        self._logged: dict[str, float] = {}
        self._every = log_every_s

    def guard(self, rule_id: str, path: str, fn: Predicate) -> Predicate:
        def test(r: LogRecord) -> bool:
            try:
                return bool(fn(r))
            except Exception as exc:
                self.failed(rule_id, path, exc)
                return False

        return test

    def failed(self, rule_id: str, path: str, exc: Exception) -> None:
        self.by_rule[rule_id] = self.by_rule.get(rule_id, 0) + 1
        now = time.monotonic()
        last = self._logged.get(rule_id)
        if last is None or now - last >= self._every:  # None: never logged (monotonic may be small)
            self._logged[rule_id] = now
            log.warning(
                "custom predicate raised rule=%s function=%s error=%s count=%d (counted as no match)",
                rule_id, path, f"{type(exc).__name__}: {exc}", self.by_rule[rule_id],
            )  # fmt: skip


FAULTS = CustomFaults()  # the process's: the worker's metrics export it


def compile_condition(cond: Condition, rule_id: str = "", faults: CustomFaults | None = None) -> Predicate:
    checks: list[Predicate] = []
    if cond.service is not None:
        checks.append(_str_predicate("service", cond.service))
    if cond.endpoint is not None:
        checks.append(_str_predicate("endpoint", cond.endpoint))
    for name in ("user_id", "session_id", "transaction_id"):
        spec = getattr(cond, name)
        if spec is not None:
            checks.append(_id_predicate(name, frozenset([spec] if isinstance(spec, str) else spec)))
    if cond.level_gte is not None:
        floor = LEVEL_VALUE[cond.level_gte]
        checks.append(lambda r: LEVEL_VALUE[r["level"]] >= floor)
    if cond.latency_ms_gt is not None:
        limit = cond.latency_ms_gt
        checks.append(lambda r: (v := r["latency_ms"]) is not None and v > limit)
    if cond.status_code_in is not None:
        codes = frozenset(cond.status_code_in)
        checks.append(lambda r: r["status_code"] in codes)
    for key, spec in (cond.attributes or {}).items():
        checks.append(_attr_predicate(key, spec))
    if cond.message_regex is not None:
        msg_search = searcher(cond.message_regex)
        checks.append(lambda r: msg_search(r["message"]) is not None)
    if cond.security_flag is True:
        checks.append(lambda r: bool(r["security_flags"]))
    elif cond.security_flag is False:
        checks.append(lambda r: not r["security_flags"])
    elif isinstance(cond.security_flag, str):
        flag = cond.security_flag
        checks.append(lambda r: flag in r["security_flags"])
    if cond.custom is not None:
        checks.append((faults or FAULTS).guard(rule_id, cond.custom, load_custom(cond.custom)))
    if not checks:
        return lambda r: True
    if len(checks) == 1:
        return checks[0]
    return _all_of(checks)


# fields a rule can be indexed by (exact values only), most selective first
INDEXED = ("session_id", "user_id", "transaction_id", "endpoint", "service")


@dataclass(frozen=True, slots=True)
class Compiled:
    """A rule ready for evaluation."""

    rule: Rule
    test: Predicate
    keeps: bool  # decides keep (capture or level)
    drops: bool

    @property
    def id(self) -> str:
        return self.rule.id


def compile_rule(rule: Rule) -> Compiled:
    alls = [compile_condition(c, rule.id) for c in rule.match.all]
    anys = [compile_condition(c, rule.id) for c in rule.match.any]

    def all_and_any(r: LogRecord) -> bool:
        for check in alls:
            if not check(r):
                return False
        if anys:
            return any(check(r) for check in anys)
        return True

    test: Predicate = all_and_any

    if not alls and not anys:
        test = _always  # a rule without conditions matches every line
    elif len(alls) == 1 and not anys:
        test = alls[0]
    actions = rule.actions
    return Compiled(rule, test, bool(actions.capture or actions.level), actions.drop)


def _always(r: LogRecord) -> bool:
    return True


def _level_only_catch_all(rule: Rule) -> bool:
    a = rule.actions
    return (
        not rule.match.all
        and not rule.match.any
        and a.level is not None
        and not (a.capture or a.tag or a.retain or a.stats or a.route or a.drop)
    )


def _index_key(rule: Rule) -> tuple[str, frozenset[Any]] | None:
    """A field whose exact value(s) every matching line must have (from an `all` condition).

    Most selective first: ids, then status codes; a level of WARN or more beats an endpoint or a
    service (most lines are below WARN), so such a rule is left to the level guard instead.
    """
    for name in INDEXED[:3]:
        for cond in rule.match.all:
            spec = getattr(cond, name)
            if isinstance(spec, str):
                return name, frozenset([spec])
            if isinstance(spec, list) and spec:
                return name, frozenset(spec)
    for cond in rule.match.all:
        if cond.status_code_in:
            return "status_code", frozenset(cond.status_code_in)
    if any(c.level_gte is not None and LEVEL_VALUE[c.level_gte] >= Level.WARN.value for c in rule.match.all):
        return None
    for name in INDEXED[3:]:
        for cond in rule.match.all:
            spec = getattr(cond, name)
            if isinstance(spec, str):
                return name, frozenset([spec])
            if isinstance(spec, list) and spec:
                return name, frozenset(spec)
            if isinstance(spec, StrMatch) and spec.exact is not None:
                return name, frozenset([spec.exact])
    return None


def _literal_prefix(spec: str | StrMatch | None) -> str | None:
    """The fixed start every matching value has (of a glob, or a regex anchored with ^), if any."""
    if isinstance(spec, StrMatch) and spec.glob is not None:
        prefix = re.split(r"[*?\[]", spec.glob, maxsplit=1)[0]
        return prefix or None
    if isinstance(spec, StrMatch) and spec.regex is not None and spec.regex.startswith("^"):
        m = re.match(r"[A-Za-z0-9/_\- ]+", spec.regex[1:])  # plain characters only: no escapes, no classes
        rest = spec.regex[1 + len(m.group(0)) :] if m else ""
        if m and not rest.startswith(("?", "*", "{")):
            return m.group(0)
    return None


def _guard(rule: Rule) -> tuple[str, float | int | str] | None:
    """A cheap necessary condition of an unindexed rule (from its `all` conditions)."""
    for cond in rule.match.all:
        for name in ("endpoint", "service"):
            prefix = _literal_prefix(getattr(cond, name))
            if prefix:
                return name, prefix
    for cond in rule.match.all:
        if cond.latency_ms_gt is not None:
            return "latency", cond.latency_ms_gt
        if cond.security_flag:
            return "flags", 1
        if cond.level_gte is not None:
            return "level", LEVEL_VALUE[cond.level_gte]
    return None


@dataclass
class Verdict:
    """What the matching rules decide for one line."""

    rules: tuple[Compiled, ...]
    drop: bool = False
    captures: tuple[tuple[str, CaptureAction], ...] = ()
    level: int | None = None  # store the line if its severity is at least this
    level_rule: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    retention_days: int | None = None
    routes: tuple[str, ...] = ()
    stats_ids: tuple[str, ...] = ()

    @property
    def rule_ids(self) -> list[str]:
        return [c.id for c in self.rules]


def decide(matched: Sequence[Compiled]) -> Verdict:
    """Resolve the matching rules (any order) into one verdict, by the documented priority order."""
    ordered = sorted(matched, key=lambda c: (-c.rule.priority, not c.keeps, c.id))
    verdict = Verdict(tuple(ordered))
    for c in ordered:
        if c.drops or c.keeps:
            verdict.drop = c.drops
            break
    if verdict.drop:
        verdict.stats_ids = tuple(c.id for c in ordered if c.rule.actions.stats)
        return verdict
    tags: list[str] = []
    routes: list[str] = []
    for c in reversed(ordered):  # lowest priority first, so higher priorities overwrite attributes
        actions = c.rule.actions
        if actions.tag:
            verdict.attributes.update(actions.tag.attributes)
    for c in ordered:
        actions = c.rule.actions
        if actions.capture:
            verdict.captures += ((c.id, actions.capture),)
        if actions.level and verdict.level is None:
            verdict.level, verdict.level_rule = LEVEL_VALUE[actions.level], c.id
        if actions.tag:
            tags.extend(t for t in actions.tag.tags if t not in tags)
        if actions.retain and verdict.retention_days is None:
            verdict.retention_days = actions.retain.retention_days
        routes.extend(r for r in actions.route if r not in routes)
    verdict.tags, verdict.routes = tuple(tags), tuple(routes)
    verdict.stats_ids = tuple(c.id for c in ordered if c.rule.actions.stats)
    return verdict


class RuleSet:
    """The rules in force, indexed by the exact field values they require; immutable once built.

    `match(record)` costs a dictionary lookup per indexed field plus the unindexed rules, so a
    hundred rules keyed by endpoint or user cost about as much as one.
    """

    def __init__(self, rules: Iterable[Rule] = (), now: datetime | None = None) -> None:
        self.rules = {r.id: r for r in rules}
        self.now = now or datetime.now(UTC)
        self.compiled: dict[str, Compiled] = {}
        self.index: dict[str, dict[Any, list[Compiled]]] = {}
        self.scan: list[Compiled] = []
        # unindexed rules behind a cheap necessary condition, so a line rarely evaluates them
        self.by_latency: list[tuple[float, Compiled]] = []
        self.by_level: dict[int, list[Compiled]] = {}
        self.by_flags: list[Compiled] = []
        self.by_prefix: dict[str, dict[str, list[Compiled]]] = {}
        # Catch-all rules that only set a level (the dynamic default level) change the baseline
        # floor instead of joining the scan: otherwise every line would take the slow path.
        self.default_level: int | None = None
        default_priority = -(10**9)
        # rules that turn the novel_template trigger on or off per service: decided per service
        # (novelty_for), never per line
        self.novelty: list[Compiled] = []
        self._novelty_by_service: dict[str, str | None] = {}
        for rule in self.rules.values():
            if not rule.active(self.now):
                continue
            c = self.compiled[rule.id] = compile_rule(rule)
            if rule.actions.novelty is not None:
                self.novelty.append(c)
                continue
            if _level_only_catch_all(rule):
                if rule.priority > default_priority:
                    default_priority = rule.priority
                    self.default_level = LEVEL_VALUE[str(rule.actions.level)]
                continue
            key = _index_key(rule)
            guard = _guard(rule) if key is None else None
            if guard is not None:
                kind, arg = guard
                if kind == "latency":
                    self.by_latency.append((float(arg), c))
                elif kind == "level":
                    for value in LEVEL_VALUE.values():
                        if value >= int(arg):
                            self.by_level.setdefault(value, []).append(c)
                elif kind == "flags":
                    self.by_flags.append(c)
                else:  # a literal prefix of a glob or anchored regex on a field
                    self.by_prefix.setdefault(str(kind), {}).setdefault(str(arg), []).append(c)
            elif key is None:
                self.scan.append(c)
            else:
                by_value = self.index.setdefault(key[0], {})
                for value in key[1]:
                    by_value.setdefault(value, []).append(c)
        self._fields = tuple(self.index.items())
        self.by_latency.sort(key=lambda t: t[0])
        self._prefixes = tuple(
            (name, by, sorted({len(p) for p in by})) for name, by in self.by_prefix.items()
        )
        self._verdicts: dict[tuple[str, ...], Verdict] = {}

    def novelty_for(self, service: str) -> str | None:
        """The novel_template trigger for a service by the rules: "off", "on" (the scope setting's),
        "service" or "endpoint" (on, with that scope), or None (the settings decide). The highest
        priority matching rule wins (then the lower id); cached per service."""
        if service in self._novelty_by_service:
            return self._novelty_by_service[service]
        decided: str | None = None
        line = cast(LogRecord, {"service": service})  # novelty rules read the service only
        for c in sorted(self.novelty, key=lambda c: (-c.rule.priority, c.id)):
            if c.test(line):
                decided = c.rule.actions.novelty
                break
        self._novelty_by_service[service] = decided
        return decided

    def __bool__(self) -> bool:
        """Whether any rule needs evaluating per line."""
        return bool(
            self.scan or self._fields or self.by_latency or self.by_level or self.by_flags or self._prefixes
        )

    def __len__(self) -> int:
        return len(self.compiled)

    def match(self, record: LogRecord) -> list[Compiled]:
        """The active rules matching a line (unordered)."""
        found = [c for c in self.scan if c.test(record)] if self.scan else []
        for name, by_value in self._fields:
            candidates = by_value.get(record[name])  # type: ignore[literal-required]
            if candidates:
                found.extend(c for c in candidates if c.test(record))
        if self.by_latency:
            latency = record["latency_ms"]
            if latency is not None and latency > self.by_latency[0][0]:
                for limit, c in self.by_latency:
                    if limit >= latency:
                        break
                    if c.test(record):
                        found.append(c)
        if self.by_level:
            candidates = self.by_level.get(LEVEL_VALUE[record["level"]])
            if candidates:
                found.extend(c for c in candidates if c.test(record))
        if self.by_flags and record["security_flags"]:
            found.extend(c for c in self.by_flags if c.test(record))
        for name, by_prefix, lengths in self._prefixes:
            value = record[name]  # type: ignore[literal-required]
            if value:
                for length in lengths:
                    candidates = by_prefix.get(value[:length])
                    if candidates:
                        found.extend(c for c in candidates if c.test(record))
        return found

    def verdict(self, record: LogRecord) -> Verdict | None:
        """What the rules decide for a line; None when no rule matches (the common case)."""
        found = self.match(record)
        return self.decided(found) if found else None

    def decided(self, found: list[Compiled]) -> Verdict:
        """The verdict of a non-empty match() result, cached by which rules matched."""
        key = tuple(sorted(c.id for c in found))
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) > 10_000:
                self._verdicts.clear()
            verdict = self._verdicts[key] = decide(found)
        return verdict

    def changed_at(self, now: datetime) -> bool:
        """Whether a rule's activity differs at `now` (time windows): then rebuild with `at(now)`."""
        return any((rid in self.compiled) != rule.active(now) for rid, rule in self.rules.items())

    def at(self, now: datetime) -> RuleSet:
        return RuleSet(self.rules.values(), now)

    def with_rule(self, rule: Rule) -> RuleSet:
        return RuleSet([*(r for r in self.rules.values() if r.id != rule.id), rule], self.now)

    def without(self, rule_id: str) -> RuleSet:
        return RuleSet([r for r in self.rules.values() if r.id != rule_id], self.now)
