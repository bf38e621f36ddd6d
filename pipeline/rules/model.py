"""The rule model: what operators may write (pydantic, strict), validated with every problem's path.

Pure logic (no Kafka). rules.compiled turns rules into an indexed set the engine asks per line.

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

from collections.abc import Iterable, Sequence
from datetime import datetime
from datetime import time as dtime
from typing import Annotated, Any, ClassVar, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import HindsightError
from pipeline.rules.patterns import compile_regex, glob_matcher
from pipeline.types import CUSTOM_FUNCTION, LEVEL_ALIASES, Level


def _level_name(value: object) -> object:
    """A level name as every other place takes it (any case, aliases such as WARNING or CRITICAL)."""
    if isinstance(value, str):
        name = value.strip().upper()
        return LEVEL_ALIASES.get(name, name)
    return value


# stored and shown by its canonical name; given by any name the CLI and the wire formats accept
LevelName = Annotated[
    Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], BeforeValidator(_level_name)
]
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
    compile_regex(pattern)  # ValueError: too long, invalid, or beyond RE2 (the linear-time engine)
    return pattern


class _OneOf(_Strict):
    """A matcher of which exactly one field is given; a `regex` or `glob` must compile for RE2."""

    _choices: ClassVar[tuple[str, ...]]

    @field_validator("regex", check_fields=False)
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _compiles(value)

    @field_validator("glob", check_fields=False)
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        if value is not None:
            glob_matcher(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> _OneOf:
        if sum(getattr(self, name) is not None for name in self._choices) != 1:
            raise ValueError(f"give exactly one of {', '.join(self._choices)}")
        return self


class StrMatch(_OneOf):
    """Exactly one of exact, glob (shell-style: *, ?, [seq]) or regex (RE2 syntax, searched)."""

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
        pattern=CUSTOM_FUNCTION,
        description="package.module:function(record) -> bool, named exactly in the allow-list.",
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
        if value not in allow:  # exact names only: a wildcard would admit dunders and imported names
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
    novelty: Literal["on", "off", "service", "endpoint"] | None = Field(
        default=None,
        description="The novel_template trigger for the matched services: on, off, or on with templates "
        "new per service or per endpoint (a rule with this action matches on service only and has no "
        "other action).",
    )

    @model_validator(mode="after")
    def _sane(self) -> Actions:
        if self.drop and (self.capture or self.level or self.tag or self.retain or self.route):
            raise ValueError("drop cannot be combined with capture, level, tag, retain or route")
        others = (
            self.capture or self.tag or self.retain or self.stats or self.route or self.drop or self.level
        )
        if self.novelty is not None and others:
            raise ValueError("novelty is a rule of its own: no other action beside it")
        if not (others or self.novelty):
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

    @model_validator(mode="after")
    def _novelty_per_service(self) -> Rule:
        # decided per service, once (RuleSet.novelty_for), never per line: so only the service counts
        if self.actions.novelty is not None:
            for cond in [*self.match.all, *self.match.any]:
                if cond.model_fields_set - {"service"}:
                    raise ValueError("a novelty rule matches on service only")
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
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                allowed = _fields_at(loc[:-1])
                msg = f"unknown field; allowed here: {', '.join(allowed)}" if allowed else "unknown field"
            problem = (_path(loc), msg)
            if problem not in problems:
                problems.append(problem)

        # of a union's failed members, report the one that got deepest ("a.regex: bad"), not "a: not a string"
        def union_noise(path: str, msg: str) -> bool:
            return msg.startswith("Input should be a valid") and any(
                (p == path and m != msg) or p.startswith(path + ".") for p, m in problems
            )

        problems = [(path, msg) for path, msg in problems if not union_noise(path, msg)]
        raise RuleError(problems) from None


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The field names of the rule's object at `loc` (for "unknown field" errors), or []."""
    model: type[BaseModel] = Rule
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        inner = _model_of(info.annotation) if info is not None else None
        if inner is None:
            return []
        model = inner
    return sorted(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


_UNION_MEMBERS = {"str", "StrMatch", "list[str]", "bool", "float", "int", "function-after[_one(), StrMatch]"}


def json_schema() -> dict[str, Any]:
    """JSON Schema of a rule (written to schemas/rule.schema.json)."""
    schema = Rule.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://log-hindsight.dev/schemas/rule.schema.json"
    return schema
