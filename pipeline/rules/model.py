"""Rules operators inject at runtime: the JSON model, validation, and a compiled, indexed rule set.

Pure logic (no Kafka): the worker feeds a `RuleSet` with the rules it reads from the compacted
`hindsight.rules` topic and asks it, per line, which rules match and what they decide.

Evaluation order (documented in the README):

1. Only enabled rules inside their time window (active_from/active_until, schedule) take part.
2. The matching rules are ordered by priority, highest first; ties by id.
3. Keep or drop: the first rule in that order with `drop`, `capture` or `level` decides. At equal
   priority a keeping rule sorts before a dropping one, so an "always capture" rule can never be
   undone by a drop of lower or equal priority.
4. If kept: every matching capture starts (per scope), the highest-priority `level` applies,
   tags and routes are the union of all matching rules, attributes and retention come from the
   highest-priority rule that sets them.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import HindsightError
from pipeline.types import Level, LogRecord

LevelName = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RULE_ID = r"^[A-Za-z0-9_.:@-]{1,128}$"
LEVEL_VALUE = {level.name: level.value for level in Level}


class RuleError(HindsightError):
    """A rule that cannot be used; `problems` lists (path, message) per bad field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


class _OneOf(_Strict):
    """A matcher of which exactly one field is given; a `regex` must compile."""

    _choices: ClassVar[tuple[str, ...]]

    @field_validator("regex", check_fields=False)
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _compiles(value)

    @model_validator(mode="after")
    def _one(self) -> _OneOf:
        if sum(getattr(self, name) is not None for name in self._choices) != 1:
            raise ValueError(f"give exactly one of {', '.join(self._choices)}")
        return self


class StrMatch(_OneOf):
    """Exactly one of exact, glob (fnmatch) or regex (searched)."""

    _choices = ("exact", "glob", "regex")
    exact: str | None = Field(default=None, description="The value, exactly.")
    glob: str | None = Field(default=None, description="Shell-style pattern, e.g. /api/*/health.")
    regex: str | None = Field(default=None, description="Regular expression, searched in the value.")


class AttrMatch(_OneOf):
    """Exactly one of equals, regex or exists for one attribute key."""

    _choices = ("equals", "regex", "exists")
    equals: str | None = Field(default=None, description="The attribute has this value.")
    regex: str | None = Field(default=None, description="The attribute's value matches (searched).")
    exists: bool | None = Field(
        default=None, description="The attribute is present (true) or absent (false)."
    )


class Condition(_Strict):
    """Every field given must hold (AND)."""

    service: str | StrMatch | None = Field(default=None, description="Service: exact string or a StrMatch.")
    endpoint: str | StrMatch | None = Field(default=None, description="Endpoint: exact string or a StrMatch.")
    user_id: str | list[str] | None = Field(default=None, description="User id, or any of a list.")
    session_id: str | list[str] | None = Field(default=None, description="Session id, or any of a list.")
    transaction_id: str | list[str] | None = Field(
        default=None, description="Transaction id, or any of a list."
    )
    level_gte: LevelName | None = Field(default=None, description="Level at or above.")
    latency_ms_gt: float | None = Field(default=None, ge=0, description="Latency above (ms).")
    status_code_in: list[int] | None = Field(default=None, min_length=1, description="Status code is one of.")
    attributes: dict[str, AttrMatch] | None = Field(default=None, description="Per attribute key, a match.")
    message_regex: str | None = Field(default=None, description="Regular expression searched in the message.")
    security_flag: bool | str | None = Field(
        default=None, description="true: any security flag; a string: that flag."
    )
    custom: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="package.module:function(record) -> bool, from the configured allow-list only.",
    )

    @field_validator("message_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _compiles(value)

    @field_validator("custom")
    @classmethod
    def _allowed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        allow = (info.context or {}).get("custom_allow", ())
        if not any(value == a or (a.endswith(":*") and value.startswith(a[:-1])) for a in allow):
            raise ValueError(f"{value} is not in the allow-list (HINDSIGHT_RULES_CUSTOM_ALLOW)")
        return value


class Match(_Strict):
    """A line matches when every `all` condition and (if any are given) one `any` condition holds."""

    all: list[Condition] = Field(default_factory=list, description="Conditions that must all hold.")
    any: list[Condition] = Field(default_factory=list, description="At least one must hold (if given).")


class Schedule(_Strict):
    """A recurring window: these days, from start to end (end before start spans midnight)."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1, description="Days of the week.")
    start: dtime = Field(description="Local start time, HH:MM.")
    end: dtime = Field(description="Local end time, HH:MM.")
    tz: str = Field(default="UTC", description="IANA time zone of start/end, e.g. Europe/Berlin.")

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.tz))
        t, day = local.time(), DAYS[local.weekday()]
        if self.start <= self.end:
            return day in self.days and self.start <= t < self.end
        yesterday = DAYS[(local.weekday() - 1) % 7]
        return (day in self.days and t >= self.start) or (yesterday in self.days and t < self.end)


class CaptureAction(_Strict):
    """Emit the lookback and keep capturing for the follow period, for the scope of the line."""

    lookback_s: float = Field(
        default=60.0, ge=0, le=86_400, description="Lines before the match (buffer-bound)."
    )
    follow_s: float = Field(default=30.0, ge=0, le=7 * 86_400, description="How long capture stays on.")
    scope: Literal["session", "endpoint", "user", "service"] = Field(
        default="session", description="What is captured: the line's session, endpoint, user or service."
    )


class TagAction(_Strict):
    tags: list[str] = Field(default_factory=list, description="Tags added to kept lines.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Attributes set on kept lines.")


class RetainAction(_Strict):
    retention_days: int = Field(
        ge=1, le=3650, description="How long the store keeps the lines (per-row TTL)."
    )


class Actions(_Strict):
    """What a matching rule does; at least one."""

    capture: CaptureAction | None = Field(default=None, description="Start a capture.")
    tag: TagAction | None = Field(default=None, description="Tag kept lines.")
    retain: RetainAction | None = Field(default=None, description="Retention of kept lines.")
    stats: bool = Field(default=False, description="Count matches, emitted lines and bytes per window.")
    route: list[str] = Field(default_factory=list, description="Extra sinks (by name) for kept lines.")
    drop: bool = Field(default=False, description="Never store the line (e.g. health checks).")
    level: LevelName | None = Field(default=None, description="Store lines at or above this level.")

    @model_validator(mode="after")
    def _sane(self) -> Actions:
        if self.drop and (self.capture or self.level or self.tag or self.retain or self.route):
            raise ValueError("drop cannot be combined with capture, level, tag, retain or route")
        if not (
            self.capture or self.tag or self.retain or self.stats or self.route or self.drop or self.level
        ):
            raise ValueError("give at least one action")
        return self


class Rule(_Strict):
    """One rule (see the module docstring for the evaluation order)."""

    id: str = Field(pattern=RULE_ID, description="Unique id; the Kafka key in hindsight.rules.")
    priority: int = Field(default=0, ge=-10_000, le=10_000, description="Higher wins a conflict.")
    enabled: bool = Field(default=True, description="Disabled rules are kept but not evaluated.")
    description: str = Field(default="", max_length=2000, description="What the rule is for.")
    match: Match = Field(default_factory=Match, description="Which lines the rule applies to.")
    active_from: datetime | None = Field(default=None, description="Not active before (ISO-8601 with zone).")
    active_until: datetime | None = Field(default=None, description="Not active from (ISO-8601 with zone).")
    schedule: Schedule | None = Field(default=None, description="Recurring window (with active_from/until).")
    actions: Actions = Field(description="What the rule does.")

    @field_validator("active_from", "active_until")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-01-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _window(self) -> Rule:
        if self.active_from and self.active_until and self.active_from >= self.active_until:
            raise ValueError("active_from must be before active_until")
        return self

    def active(self, now: datetime) -> bool:
        if not self.enabled:
            return False
        if self.active_from is not None and now < self.active_from:
            return False
        if self.active_until is not None and now >= self.active_until:
            return False
        return self.schedule is None or self.schedule.contains(now)


def _path(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def validate_rule(data: Any, custom_allow: Iterable[str] = ()) -> Rule:
    """A Rule from decoded JSON, or RuleError naming the path of every bad field."""
    try:
        # strict, as JSON: a JSON boolean is not a number, "5" is not an integer (the JSON Schema says so)
        raw = orjson.dumps(data)
        return Rule.model_validate_json(raw, strict=True, context={"custom_allow": tuple(custom_allow)})
    except TypeError as exc:  # not JSON-serialisable at all (only from Python callers)
        raise RuleError([("(root)", f"not JSON: {exc}")]) from None
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False):
            # pydantic puts the member of a union it tried into the path; hide the type names
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_MEMBERS)]
            problem = (_path(loc), str(err["msg"]).removeprefix("Value error, "))
            if problem not in problems:
                problems.append(problem)

        # of a union's failed members, report the one that got deepest ("a.regex: bad"), not "a: not a string"
        def union_noise(path: str, msg: str) -> bool:
            return msg.startswith("Input should be a valid") and any(
                (p == path and m != msg) or p.startswith(path + ".") for p, m in problems
            )

        problems = [(path, msg) for path, msg in problems if not union_noise(path, msg)]
        raise RuleError(problems) from None


_UNION_MEMBERS = {"str", "StrMatch", "list[str]", "bool", "float", "int", "function-after[_one(), StrMatch]"}


def json_schema() -> dict[str, Any]:
    """JSON Schema of a rule (written to schemas/rule.schema.json)."""
    schema = Rule.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://log-hindsight.dev/schemas/rule.schema.json"
    return schema


# ----------------------------------------------------------------------------------------------
# Compiled evaluation
# ----------------------------------------------------------------------------------------------

Predicate = Callable[[LogRecord], bool]


def _str_predicate(fieldname: str, spec: str | StrMatch) -> Predicate:
    if isinstance(spec, str) or spec.exact is not None:
        value = spec if isinstance(spec, str) else spec.exact
        return lambda r: r[fieldname] == value  # type: ignore[literal-required]
    pattern = re.compile(fnmatch.translate(spec.glob) if spec.glob is not None else str(spec.regex))
    search = pattern.match if spec.glob is not None else pattern.search
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
    search = re.compile(str(spec.regex)).search
    return lambda r: (v := r["attributes"].get(key)) is not None and search(v) is not None


def load_custom(path: str) -> Predicate:
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RuleError([("custom", f"cannot load {path}: {exc}")]) from None
    if not callable(fn):
        raise RuleError([("custom", f"{path} is not callable")])
    return fn  # type: ignore[no-any-return]


def compile_condition(cond: Condition) -> Predicate:
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
        msg_search = re.compile(cond.message_regex).search
        checks.append(lambda r: msg_search(r["message"]) is not None)
    if cond.security_flag is True:
        checks.append(lambda r: bool(r["security_flags"]))
    elif cond.security_flag is False:
        checks.append(lambda r: not r["security_flags"])
    elif isinstance(cond.security_flag, str):
        flag = cond.security_flag
        checks.append(lambda r: flag in r["security_flags"])
    if cond.custom is not None:
        custom = load_custom(cond.custom)
        checks.append(lambda r: bool(custom(r)))
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
    alls = [compile_condition(c) for c in rule.match.all]
    anys = [compile_condition(c) for c in rule.match.any]

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
        for rule in self.rules.values():
            if not rule.active(self.now):
                continue
            c = self.compiled[rule.id] = compile_rule(rule)
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


def level_rules(answer: dict[str, Any]) -> list[Rule]:
    """Rules from a dynamic-level answer {"default": L, "services": {S: L}, "endpoints": {E: L}}.

    Raises RuleError if the answer is malformed (the poller then keeps its last good answer).
    """
    if not isinstance(answer, dict):
        raise RuleError([("(root)", "expected a JSON object")])
    unknown = set(answer) - {"default", "services", "endpoints"}
    if unknown:
        raise RuleError([(k, "unknown key (expected default, services, endpoints)") for k in sorted(unknown)])
    rules: list[dict[str, Any]] = []
    if answer.get("default") is not None:
        rules.append({"id": "level:default", "priority": -100, "actions": {"level": answer["default"]}})
    for i, (kind, fieldname) in enumerate((("services", "service"), ("endpoints", "endpoint"))):
        mapping = answer.get(kind) or {}
        if not isinstance(mapping, dict):
            raise RuleError([(kind, "expected an object of name -> level")])
        for name, level in mapping.items():
            rules.append(
                {
                    "id": re.sub(r"[^A-Za-z0-9_.:@-]", "_", f"level:{fieldname}:{name}")[:128],
                    "priority": -90 + i,  # endpoint beats service beats default; every real rule beats all
                    "match": {"all": [{fieldname: name}]},
                    "actions": {"level": str(level).upper()},
                }
            )
    out = []
    problems: list[tuple[str, str]] = []
    for spec in rules:
        try:
            out.append(validate_rule(spec))
        except RuleError as exc:
            problems.extend((f"{spec['id']}.{p}", m) for p, m in exc.problems)
    if problems:
        raise RuleError(problems)
    return out
