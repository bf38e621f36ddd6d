"""Templates: masking and id stability (the same shape from different values is one id, different
shapes are different ids, the same in every process), the cache, and the novel_template trigger:
lookback and follow-up of a session whose line has a new shape, no second firing for a repeat, the
learning period, the budget after a deploy, a catalog shared between processes, count deltas."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import WindowConfig
from pipeline.engine.templates import MASK, Templates, mask, template_id
from pipeline.types import LogRecord
from pipeline.wire.records import normalize
from tests.unit.engine.support import MODE, decode, encode

T0 = 1_790_000_000_000_000
S = 1_000_000
CFG = WindowConfig(
    key_budget_lps=10**6,
    global_budget_lps=10**7,
    novel_template=True,
    novel_template_learning_us=10 * S,
    novel_template_budget=3,
    novel_template_budget_window_us=60 * S,
    lookback_us=30 * S,
    follow_us=5 * S,
)


def test_the_same_shape_with_other_values_is_one_template() -> None:
    a = "payment 8812 failed for 10.0.0.7:443 in 35 ms (order=A-17, id 3fa85f64-5717-4562-b3fc-2c963f66afa6)"
    b = "payment 17 failed for 192.168.1.20:8443 in 2 ms (order=B-9, id 0b2e1f64-1111-4562-b3fc-2c963f66afa6)"
    assert mask(a) == mask(b) == f"payment {MASK} failed for {MASK} in {MASK} ms (order={MASK} id {MASK}"
    assert template_id(mask(a)) == template_id(mask(b))
    assert mask('user "alice" logged in at 2026-12-01T03:00:00Z') == f"user {MASK} logged in at {MASK}"
    assert mask("certificate verify failed") == "certificate verify failed"  # nothing variable


def test_different_shapes_are_different_templates() -> None:
    shapes = [
        "payment 1 failed",
        "payment 1 refunded",
        "payment failed",
        "refund 1 failed",
        "payment  1 failed",
    ]
    assert len({template_id(mask(s)) for s in shapes}) == len(shapes)


def test_ids_are_stable_across_processes_and_runs() -> None:
    """Not Python's salted hash: another interpreter (another hash seed) computes the same id."""
    code = "from pipeline.engine.templates import mask, template_id; print(template_id(mask('took 5 ms')))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "77"},
        cwd=Path(__file__).resolve().parents[3],
    )
    assert other.stdout.strip() == template_id(mask("took 99 ms")) == template_id(f"took {MASK} ms")
    assert len(template_id("x")) == 16 and int(template_id("x"), 16) >= 0


def test_the_cache_answers_repeats_without_masking_again() -> None:
    templates = Templates(cache_size=4)
    first = templates.of("took 5 ms")
    assert templates.of("took 5 ms") == first and templates.masked == 1
    assert templates.of("took 6 ms")[0] == first[0] and templates.masked == 2
    for i in range(10):  # past its size the cache starts over: bounded memory, same answers
        assert templates.id_of(f"took {i} ms") == first[0]
    assert len(templates._by_message) <= 4


def line(t_s: float, session: str, message: str, service: str = "shop", **fields: Any) -> LogRecord:
    rec = normalize(
        {
            "timestamp": T0 + int(t_s * S),
            "service": service,
            "level": "INFO",
            "message": message,
            "session_id": session,
            "endpoint": "/pay",
            **fields,
        }
    )
    rec["template_id"] = template_id(mask(message))  # as ingest sets it
    return rec


def feed(hs: Hindsight, lines: list[LogRecord], partition: int = 0) -> list[dict[str, Any]]:
    """One line per message, in order; the curated rows they emitted."""
    rows: list[dict[str, Any]] = []
    compact = MODE["buffers"] == "encoded"
    for rec in lines:
        offset = int((rec["timestamp"] - T0) // 1000) + partition
        em = hs.process_message(
            "logs.raw", partition, offset, [rec], None, False, encode([rec]) if compact else None
        )
        rows.extend(r for batch in em.curated.values() for r in batch)  # type: ignore[misc]
    return rows


def engine(origin: str | None = None, config: WindowConfig = CFG) -> Hindsight:
    return Hindsight(config, decode if MODE["buffers"] == "encoded" else None, origin)


def chatter(t0: float, t1: float, session: str, step: float = 0.5) -> list[LogRecord]:
    """Lines of known shapes (their values change, their templates do not)."""
    out = []
    t = t0
    while t < t1:
        out.append(line(t, session, f"cart {int(t * 10)} loaded for {session}-x1"))
        t += step
    return out


def test_a_new_shape_keeps_its_sessions_lookback_and_follow_up_once() -> None:
    hs = engine()
    learning = chatter(0, 12, "s-warm")  # the learning period: shapes learned, nothing fires
    assert feed(hs, learning) == []
    before = chatter(13, 20, "s-new")
    novel = line(20, "s-new", "certificate verify failed for upstream 10.0.0.9")  # INFO, a new shape
    after = chatter(20.5, 24, "s-new") + chatter(26, 28, "s-new")  # follow-up ends at 25 s
    rows = feed(hs, [*before, novel, *after])
    kept = {r["message"] for r in rows}
    assert kept == {r["message"] for r in [*before, novel, *after] if r["timestamp"] <= T0 + 25 * S}
    assert {tuple(r["trigger_reasons"]) for r in rows} == {("novel_template",)}
    assert all(r["template_id"] for r in rows)
    # the same shape later, in another session: known now, nothing kept
    assert feed(hs, [line(40, "s-other", "certificate verify failed for upstream 10.9.9.9")]) == []
    assert hs.shared.catalog.novel >= 2  # the chatter's shape and the new one


def test_nothing_fires_while_learning_and_when_off_for_the_service() -> None:
    hs = engine()
    assert feed(hs, [line(1, "a", "first shape"), line(2, "a", "second shape 7")]) == []  # learning
    off = engine(config=dataclasses.replace(CFG, novel_template=False))
    assert feed(off, [*chatter(0, 12, "w"), line(20, "b", "brand new shape")]) == []


def test_a_deploy_that_changes_every_message_stays_within_the_budget() -> None:
    hs = engine()
    feed(hs, chatter(0, 12, "warm"))
    deploy = [line(20 + i * 0.1, f"d{i}", f"v2 {'x' * (i + 1)} ready") for i in range(20)]  # 20 shapes
    rows = feed(hs, deploy)
    fired = {r["trigger_id"] for r in rows}
    assert len(fired) == CFG.novel_template_budget == 3
    catalog = hs.shared.catalog
    assert catalog.suppressed == 17 and catalog.novel >= 21  # every shape learned all the same
    # a minute later the budget has room again
    assert feed(hs, [line(90, "late", "v3 ready")]) != []


def test_a_template_learned_in_one_process_does_not_fire_in_another() -> None:
    a, b = engine("A"), engine("B")
    for hs in (a, b):
        feed(hs, chatter(0, 12, "warm"))
    fired_a = feed(a, [line(20, "s1", "disk quota exceeded on vol7")])
    assert fired_a and {tuple(r["trigger_reasons"]) for r in fired_a} == {("novel_template",)}
    log = [{**ev, "origin": "A"} for ev in a.take_outbox() if ev["kind"] == "template"]
    assert any(ev["template_id"] == template_id(mask("disk quota exceeded on vol7")) for ev in log)
    b.apply_shared(log)
    assert feed(b, [line(21, "s2", "disk quota exceeded on vol9")], partition=2) == []


def test_counts_leave_as_deltas_on_the_tick() -> None:
    hs = engine()
    feed(hs, [line(1, "a", "took 5 ms"), line(2, "a", "took 7 ms"), line(3, "a", "took 9 ms", level="WARN")])
    deltas = [d for d in hs.tick(T0 + 100 * S).stats if d["kind"] == "template"]
    [d] = deltas
    assert (d["count"], d["levels"], d["template"], d["example"]) == (
        3,
        {"INFO": 2, "WARN": 1},
        f"took {MASK} ms",
        "took 5 ms",
    )
    assert (d["first_us"], d["last_us"], d["service"]) == (T0 + 1 * S, T0 + 3 * S, "shop")
    assert [x for x in hs.tick(T0 + 200 * S).stats if x["kind"] == "template"] == []  # nothing new since


def test_rules_turn_the_trigger_on_or_off_per_service() -> None:
    from pipeline.rules.compiled import RuleSet
    from pipeline.rules.model import validate_rule

    def rule(rid: str, service: object, mode: str, priority: int = 0) -> Any:
        return validate_rule(
            {
                "id": rid,
                "priority": priority,
                "match": {"all": [{"service": service}]},
                "actions": {"novelty": mode},
            }
        )

    rules = RuleSet([rule("on-shop", "shop", "on"), rule("off-glob", {"glob": "batch-*"}, "off")])
    assert not rules  # nothing evaluated per line
    assert (rules.novelty_for("shop"), rules.novelty_for("batch-7"), rules.novelty_for("other")) == (
        "on",
        "off",
        None,
    )
    higher = RuleSet([rule("on-shop", "shop", "on"), rule("off-shop", "shop", "off", priority=5)])
    assert higher.novelty_for("shop") == "off"

    off_by_default = engine(config=dataclasses.replace(CFG, novel_template=False))
    off_by_default.set_rules(rules)
    feed(off_by_default, chatter(0, 12, "w"))
    feed(off_by_default, [line(0, "wb", "batch warm 1", service="batch-7")])
    kept = feed(
        off_by_default, [line(20, "s", "a shop shape"), line(21, "b", "a batch shape", service="batch-7")]
    )
    assert [r["message"] for r in kept if r["session_id"] == "s"] == ["a shop shape"]  # on by the rule
    assert not [r for r in kept if r["service"] == "batch-7"]  # off by the rule


def test_a_novelty_rule_matches_on_service_only_and_acts_alone() -> None:
    import pytest

    from pipeline.rules.model import RuleError, validate_rule

    with pytest.raises(RuleError, match="service only"):
        validate_rule({"id": "x", "match": {"all": [{"endpoint": "/pay"}]}, "actions": {"novelty": "on"}})
    with pytest.raises(RuleError, match="no other action"):
        validate_rule({"id": "x", "actions": {"novelty": "off", "tag": {"tags": ["t"]}}})
    assert validate_rule({"id": "x", "actions": {"novelty": "off"}}).actions.novelty == "off"  # every service


def test_a_rule_scopes_a_service_by_endpoint() -> None:
    """With "endpoint", a shape known on one endpoint of the service is new on another; the other
    services keep the setting's scope (per service)."""
    from pipeline.rules.compiled import RuleSet
    from pipeline.rules.model import validate_rule

    hs = engine()
    scoped = {"id": "ep", "match": {"all": [{"service": "shop"}]}, "actions": {"novelty": "endpoint"}}
    hs.set_rules(RuleSet([validate_rule(scoped)]))
    feed(hs, [*chatter(0, 12, "w"), line(1, "w2", "stock 3 low", service="depot")])
    first = feed(hs, [line(20, "a", "refund 5 denied")])  # /pay
    again = feed(hs, [line(30, "b", "refund 9 denied", endpoint="/refund")])  # new on /refund
    assert [r["session_id"] for r in first] == ["a"] and [r["session_id"] for r in again] == ["b"]
    # depot keeps the setting's scope (per service): its known shape is not new on another endpoint
    assert feed(hs, [line(40, "c", "stock 8 low", service="depot", endpoint="/other")]) == []


def test_the_catalog_stays_within_templates_max() -> None:
    """Shapes made of words (a template per user name): past templates_max the least recently seen
    are forgotten, counted, and their pending counts are not sent twice."""
    hs = engine(config=dataclasses.replace(CFG, templates_max=100))
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    names = [f"{a}{b}" for a in words for b in words] + [f"{a}x{b}" for a in words for b in words[:5]]
    feed(hs, [line(1 + i * 0.01, "u", f"login by {name} ok") for i, name in enumerate(names)])  # 150
    catalog = hs.shared.catalog
    assert len(catalog) <= 100 and catalog.evicted == len(names) - len(catalog)
    assert len(catalog) == sum(len(by) for by in catalog.entries.values())
    kept = {d["template_id"] for d in catalog.take_deltas()}
    assert len(kept) == len(catalog)  # what was forgotten is not sent
    # the most recent shape is still known: no second firing for it
    last = line(5, "u", f"login by {names[-1]} ok")
    tid = template_id(mask(last["message"]))
    assert catalog.known(last["service"], last["endpoint"], last["level"], tid, T0 + 5 * S)
