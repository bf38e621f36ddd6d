"""Rules: validation with paths, priority conflicts, time windows, every action in the engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import WindowConfig
from pipeline.rules.compiled import RuleSet, decide
from pipeline.rules.levelpoll import level_rules
from pipeline.rules.model import RuleError, json_schema, validate_rule
from pipeline.types import RawLine
from pipeline.wire.records import normalize
from tests.unit.engine.support import process

T0 = 1_790_000_000_000_000
S = 1_000_000
ROOT = Path(__file__).resolve().parents[3]


CUSTOM_ALLOW = ["tests.unit.rules.custom_rules:long_message", "tests.unit.rules.custom_rules:explodes"]


def rule(rule_id: str, **spec: Any) -> Any:
    return validate_rule({"id": rule_id, **spec}, custom_allow=CUSTOM_ALLOW)


class Feed:
    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, session: str, t_s: float, **fields: Any) -> RawLine:
        self.offset += 1
        obj = {
            "timestamp": T0 + int(t_s * S),
            "service": "shop",
            "level": "DEBUG",
            "session_id": session,
            "message": f"{session}@{t_s}",
            "endpoint": "/cart",
        }
        obj.update(fields)
        return RawLine(normalize(obj), "logs.raw", 0, self.offset)


def kept(hs: Hindsight, lines: list[RawLine]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        for rows in process(hs, [line]).curated.values():
            for r in rows:
                out[r["message"]] = r
    return out


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"id": "bad id!", "actions": {"stats": True}}, "id", "pattern"),
        ({"id": "r", "priority": "high", "actions": {"stats": True}}, "priority", "integer"),
        ({"id": "r", "actions": {}}, "actions", "at least one action"),
        ({"id": "r", "actions": {"drop": True, "level": "INFO"}}, "actions", "drop cannot be combined"),
        ({"id": "r", "actions": {"level": "LOUD"}}, "actions.level", "'TRACE'"),
        (
            {"id": "r", "match": {"all": [{"endpoint": {"regex": "("}}]}, "actions": {"stats": True}},
            "match.all.0.endpoint.regex",
            "invalid regular expression",
        ),
        (
            {
                "id": "r",
                "match": {"all": [{"endpoint": {"glob": "/a", "regex": "b"}}]},
                "actions": {"stats": True},
            },
            "match.all.0.endpoint",
            "exactly one",
        ),
        (
            {"id": "r", "match": {"any": [{"colour": "red"}]}, "actions": {"stats": True}},
            "match.any.0.colour",
            "unknown field; allowed here: attributes, custom, endpoint, latency_ms_gt, level_gte,",
        ),
        (
            {"id": "r", "match": {"all": [{"custom": "os:system"}]}, "actions": {"stats": True}},
            "match.all.0.custom",
            "allow-list",
        ),
        (
            {
                "id": "r",
                "active_from": "2026-01-02T00:00:00Z",
                "active_until": "2026-01-01T00:00:00Z",
                "actions": {"stats": True},
            },
            "(root)",
            "active_from must be before",
        ),
        (
            {"id": "r", "active_from": "2026-01-02T00:00:00", "actions": {"stats": True}},
            "active_from",
            "time zone",
        ),
        (
            {
                "id": "r",
                "schedule": {"start": "09:00", "end": "17:00", "tz": "Mars/Base"},
                "actions": {"stats": True},
            },
            "schedule.tz",
            "unknown time zone",
        ),
        ({"id": "r", "actions": {"capture": {"scope": "planet"}}}, "actions.capture.scope", "'session'"),
        (
            {"id": "r", "actions": {"retain": {"retention_days": 0}}},
            "actions.retain.retention_days",
            "greater",
        ),
    ],
)
def test_each_bad_field_gets_its_own_message(spec: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(RuleError) as err:
        validate_rule(spec)
    problems = dict(err.value.problems)
    assert path in problems, problems
    assert words in problems[path]
    assert len(err.value.problems) == 1, err.value.problems  # no noise from union members


def test_several_bad_fields_are_all_reported() -> None:
    with pytest.raises(RuleError) as err:
        validate_rule({"id": "", "priority": "x", "actions": {"level": "NOPE"}})
    assert {p for p, _ in err.value.problems} == {"id", "priority", "actions.level"}


def test_json_schema_file_is_the_models_schema() -> None:
    on_disk = json.loads((ROOT / "schemas" / "rule.schema.json").read_text())
    assert on_disk == json_schema()


def test_priority_keep_beats_lower_drop_and_higher_drop_wins() -> None:
    critical = rule(
        "critical", priority=100, match={"all": [{"endpoint": "/pay"}]}, actions={"capture": {"follow_s": 5}}
    )
    noisy = rule("noisy", priority=10, match={"all": [{"endpoint": {"glob": "/*"}}]}, actions={"drop": True})
    mute = rule("mute", priority=200, match={"all": [{"user_id": "bot"}]}, actions={"drop": True})
    rules = RuleSet([critical, noisy, mute])
    pay = normalize({"timestamp": T0, "service": "s", "level": "INFO", "message": "m", "endpoint": "/pay"})
    verdict = rules.verdict(pay)
    assert verdict is not None and not verdict.drop and verdict.rule_ids == ["critical", "noisy"]
    other = {**pay, "endpoint": "/health"}
    assert rules.verdict(other).drop  # type: ignore[union-attr]
    bot = {**pay, "user_id": "bot"}
    assert rules.verdict(bot).drop  # type: ignore[union-attr]
    # equal priority: keeping sorts first
    tie = decide(
        [
            rules.compiled["noisy"],
            RuleSet([critical.model_copy(update={"priority": 10})]).compiled["critical"],
        ]
    )
    assert not tie.drop


def test_rule_index_and_guards_skip_rules_that_cannot_match() -> None:
    many = [
        rule(f"user-{i}", match={"all": [{"user_id": f"u{i}"}]}, actions={"stats": True}) for i in range(500)
    ]
    guarded = [
        rule("slow", match={"all": [{"latency_ms_gt": 100}]}, actions={"stats": True}),
        rule(
            "errors-cart",
            match={"all": [{"endpoint": "/cart", "level_gte": "ERROR"}]},
            actions={"stats": True},
        ),
        rule(
            "internal", match={"all": [{"endpoint": {"glob": "/internal/*/debug"}}]}, actions={"stats": True}
        ),
        rule("admin", match={"all": [{"endpoint": {"regex": "^/admin/v[0-9]"}}]}, actions={"stats": True}),
        rule("5xx", match={"all": [{"status_code_in": [500, 503]}]}, actions={"stats": True}),
        rule("anything-odd", match={"any": [{"message_regex": "odd"}]}, actions={"stats": True}),
    ]
    rules = RuleSet([*many, *guarded])
    assert [c.id for c in rules.scan] == ["anything-odd"] and len(rules.index["user_id"]) == 500
    assert set(rules.by_prefix["endpoint"]) == {"/internal/", "/admin/v"} and rules.index["status_code"]
    base = {
        "timestamp": T0,
        "service": "s",
        "level": "INFO",
        "message": "m",
        "user_id": "u7",
        "latency_ms": 5,
    }

    def ids(**over: Any) -> set[str]:
        return {c.id for c in rules.match(normalize({**base, **over}))}

    assert ids() == {"user-7"}
    assert ids(latency_ms=101) == {"user-7", "slow"}
    assert ids(endpoint="/cart", level="ERROR", user_id=None) == {"errors-cart"}
    assert ids(endpoint="/cart", level="WARN", user_id=None) == set()
    assert ids(endpoint="/internal/x/debug", user_id=None) == {"internal"}
    assert ids(endpoint="/internal/x/info", user_id=None) == set()
    assert ids(endpoint="/admin/v2/users", status_code=503, message="odd one", user_id=None) == {
        "admin",
        "5xx",
        "anything-odd",
    }


def test_time_window_activation_with_a_controlled_clock() -> None:
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
    window = rule(
        "office-hours",
        match={"all": [{"service": "shop"}]},
        schedule={"days": ["mon"], "start": "09:00", "end": "10:00", "tz": "UTC"},
        active_until=(start + timedelta(days=1)).isoformat(),
        actions={"level": "DEBUG"},
    )
    hs = Hindsight(WindowConfig())
    hs.set_rules(RuleSet([window], now=start))
    feed = Feed()
    assert kept(hs, [feed("a", 1)]) == {}  # 08:00: not active
    hs.tick(int((start + timedelta(hours=1, minutes=1)).timestamp() * S))
    assert list(kept(hs, [feed("a", 2)])) == ["a@2"]  # 09:01: active
    hs.tick(int((start + timedelta(hours=2)).timestamp() * S))
    assert kept(hs, [feed("a", 3)]) == {}  # 10:00: over
    hs.tick(int((start + timedelta(days=7, hours=1)).timestamp() * S))
    assert kept(hs, [feed("a", 4)]) == {}  # next Monday 09:00, but past active_until


def test_capture_rule_on_session_uses_its_own_lookback_and_follow() -> None:
    feed = Feed()
    hs = Hindsight(WindowConfig(lookback_us=60 * S, follow_us=30 * S))
    hs.set_rules(
        RuleSet(
            [
                rule(
                    "vip",
                    match={"all": [{"user_id": "vip"}]},
                    actions={"capture": {"lookback_s": 10, "follow_s": 5}},
                )
            ]
        )
    )
    got = kept(
        hs,
        [
            feed("s", 0),
            feed("s", 45),
            feed("s", 50, user_id="vip", message="login"),
            feed("s", 54),
            feed("s", 56),
        ],
    )
    assert list(got) == ["s@45", "login", "s@54"]
    assert got["login"]["trigger_reasons"] == ["rule:vip"] and got["login"]["rule_ids"] == ["vip"]


def test_capture_rule_with_user_scope_follows_the_user_across_sessions() -> None:
    feed = Feed()
    hs = Hindsight(WindowConfig())
    hs.set_rules(
        RuleSet(
            [
                rule(
                    "watch",
                    match={"all": [{"message_regex": "refund"}]},
                    actions={"capture": {"scope": "user", "lookback_s": 20, "follow_s": 30}},
                )
            ]
        )
    )
    got = kept(
        hs,
        [
            feed("a", 0, user_id="u1", message="old"),
            feed("b", 15, user_id="u1", message="before"),
            feed("c", 16, user_id="u2", message="someone else"),
            feed("a", 25, user_id="u1", message="refund please"),
            feed("d", 40, user_id="u1", message="later"),
            feed("d", 60, user_id="u1", message="too late"),
        ],
    )
    assert set(got) == {"before", "refund please", "later"}
    assert got["later"]["trigger_reasons"] == ["rule:watch"]


def test_level_tag_retain_route_and_stats_actions() -> None:
    feed = Feed()
    hs = Hindsight(WindowConfig(stats_window_us=10 * S, stats_grace_us=S))
    hs.set_rules(
        RuleSet(
            [
                rule(
                    "debug-checkout",
                    priority=5,
                    match={"all": [{"endpoint": "/checkout"}]},
                    actions={"level": "DEBUG", "stats": True, "route": ["webhook"]},
                ),
                rule(
                    "pci",
                    priority=9,
                    match={"any": [{"attributes": {"card": {"exists": True}}}]},
                    actions={
                        "tag": {"tags": ["pci"], "attributes": {"owner": "payments"}},
                        "retain": {"retention_days": 400},
                    },
                ),
                rule(
                    "health",
                    priority=1,
                    match={"all": [{"endpoint": {"regex": "^/health"}}]},
                    actions={"drop": True},
                ),
            ]
        )
    )
    got = kept(
        hs,
        [
            feed("a", 1, endpoint="/checkout", message="c1"),
            feed("a", 2, endpoint="/checkout", attributes={"card": "x"}, message="c2"),
            feed("a", 3, message="cart debug"),
            feed("h", 4, endpoint="/healthz", level="ERROR", message="health error"),
        ],
    )
    assert set(got) == {"c1", "c2"}  # the dropped health-check error is never stored
    assert got["c1"]["trigger_reasons"] == ["rule:debug-checkout"] and got["c1"]["routes"] == ["webhook"]
    assert got["c2"]["tags"] == ["pci"] and got["c2"]["retention_days"] == 400
    assert got["c2"]["attributes"]["owner"] == "payments" and got["c2"]["rule_ids"] == [
        "pci",
        "debug-checkout",
    ]
    assert hs.metrics.dropped == 1
    stats = process(hs, [feed("z", 30)]).stats
    [row] = [s for s in stats if s["kind"] == "rule"]
    assert (row["rule_id"], row["matches"], row["lines_emitted"]) == ("debug-checkout", 2, 2)
    assert row["bytes_emitted"] == len("c1") + len("c2")


def test_custom_function_from_the_allow_list() -> None:
    feed = Feed()
    hs = Hindsight(WindowConfig())
    hs.set_rules(
        RuleSet(
            [
                rule(
                    "odd",
                    match={"all": [{"custom": "tests.unit.rules.custom_rules:long_message"}]},
                    actions={"level": "TRACE"},
                )
            ]
        )
    )
    assert list(kept(hs, [feed("a", 1, message="short"), feed("a", 2, message="x" * 50)])) == ["x" * 50]


def test_level_rules_from_a_dynamic_level_answer() -> None:
    rules = RuleSet(
        level_rules({"default": "ERROR", "services": {"shop": "debug"}, "endpoints": {"/pay": "INFO"}})
    )
    assert rules.default_level == 17
    feed = Feed()
    hs = Hindsight(WindowConfig())
    hs.set_rules(rules)
    got = kept(
        hs,
        [
            feed("a", 1, message="shop debug"),
            feed("b", 1, service="auth", level="WARN", message="auth warn"),
            feed("c", 1, service="auth", endpoint="/pay", level="INFO", message="pay info"),
        ],
    )
    assert set(got) == {"shop debug", "pay info"}  # WARN of auth is below the default ERROR
    with pytest.raises(RuleError):
        level_rules({"default": "LOUD"})
    with pytest.raises(RuleError):
        level_rules({"servics": {}})


def test_an_unknown_field_lists_the_allowed_ones_where_it_is() -> None:
    with pytest.raises(RuleError) as caught:
        validate_rule({"id": "g", "bogus": 1, "actions": {"capture": {"lookback": 60}}})
    problems = dict(caught.value.problems)
    assert problems["actions.capture.lookback"] == "unknown field; allowed here: follow_s, lookback_s, scope"
    assert problems["bogus"].startswith("unknown field; allowed here: actions, active_from, active_until")


def test_level_names_are_taken_as_everywhere_else() -> None:
    """`--level WARNING` works in queries and the wire formats take aliases: rules take them too."""
    rule = validate_rule(
        {"id": "w", "match": {"all": [{"level_gte": "warning"}]}, "actions": {"level": "CRITICAL"}}
    )
    assert rule.match.all[0].level_gte == "WARN" and rule.actions.level == "FATAL"
    with pytest.raises(RuleError, match="level_gte"):
        validate_rule({"id": "w", "match": {"all": [{"level_gte": "LOUD"}]}, "actions": {"stats": True}})


def test_a_custom_predicate_that_raises_is_no_match_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pipeline.rules.compiled import FAULTS

    before = FAULTS.by_rule.get("buggy", 0)
    feed = Feed()
    hs = Hindsight(WindowConfig())
    hs.set_rules(
        RuleSet(
            [
                rule(
                    "buggy",
                    match={"all": [{"custom": "tests.unit.rules.custom_rules:explodes"}]},
                    actions={"level": "TRACE"},
                )
            ]
        )
    )
    with caplog.at_level("WARNING", logger="pipeline.rules.compiled"):
        got = list(kept(hs, [feed("a", 1, message="boom"), feed("a", 2, message="boom again"), feed("a", 3)]))
    assert got == ["a@3"]  # the raising lines did not match; the engine went on with the next line
    assert FAULTS.by_rule["buggy"] == before + 2
    warnings = [r.getMessage() for r in caplog.records if "custom predicate raised" in r.getMessage()]
    assert len(warnings) == 1 and "rule=buggy" in warnings[0] and "predicate bug" in warnings[0]


@pytest.mark.parametrize(
    "name",
    [
        "json:__class__",
        "tests.unit.rules.custom_rules:_private",
        "os._wrap_close:close",
        "tests.unit.rules.*:x",
    ],
)
def test_custom_names_are_exact_and_never_private(name: str) -> None:
    with pytest.raises(RuleError) as err:
        validate_rule(
            {"id": "r", "match": {"all": [{"custom": name}]}, "actions": {"drop": True}}, custom_allow=[name]
        )
    assert "match.all.0.custom" in dict(err.value.problems)
    # a name in the allow-list's module but not itself listed is refused too
    with pytest.raises(RuleError, match="not in the allow-list"):
        rule("r", match={"all": [{"custom": "tests.unit.rules.custom_rules:Any"}]}, actions={"drop": True})


def test_the_allow_list_setting_takes_exact_names_only() -> None:
    from pydantic import ValidationError

    from pipeline.settings import Settings

    assert Settings(rules_custom_allow=["pkg.mod:fn"]).rules_custom_allow == ["pkg.mod:fn"]
    for bad in (["pkg.mod:*"], ["json:__class__"], ["pkg._mod:fn"]):
        with pytest.raises(ValidationError, match="name each function exactly"):
            Settings(rules_custom_allow=bad)
