"""Prometheus collectors: exact values for a known feed, names hindsight_<what>_<unit>_total, counters
that stay monotonic when a partition moves away."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.engine.templates import mask
from pipeline.metrics import LagCache
from pipeline.rules.compiled import RuleSet
from pipeline.rules.model import validate_rule
from pipeline.settings import Settings
from pipeline.worker.metrics import WorkerCollector
from pipeline.worker.processor import RawProcessor

T0 = 1_790_000_000_000_000


def scrape(*collectors: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def line(
    session: str, t_s: float, level: str = "DEBUG", endpoint: str = "/cart", msg: str = ""
) -> dict[str, Any]:
    return {
        "timestamp": T0 + int(t_s * 1_000_000),
        "service": "shop",
        "level": level,
        "session_id": session,
        "endpoint": endpoint,
        "message": msg or f"{session}@{t_s}",
    }


def test_worker_counters_exact_and_cost_accounting() -> None:
    processor = RawProcessor(Settings(lookback_s=60, follow_s=30))
    mute = {"id": "mute-health", "match": {"all": [{"endpoint": "/health"}]}, "actions": {"drop": True}}
    tag = {
        "id": "tag-cart",
        "match": {"all": [{"endpoint": "/cart"}]},
        "actions": {"tag": {"tags": ["cart"]}},
    }
    processor.set_rules(RuleSet([validate_rule(mute), validate_rule(tag)]))
    messages = [
        [line("a", 1, msg="x" * 10), line("a", 2, msg="y" * 20)],  # buffered, then emitted by the error
        [line("b", 1, endpoint="/health", msg="z" * 7)],  # dropped by the rule
        [line("a", 3, level="ERROR", msg="e" * 5)],  # the trigger
        [line("c", 3, level="INFO", msg="q" * 3)],  # never triggered: avoided
    ]
    raw = 0
    for offset, batch in enumerate(messages):
        value = orjson.dumps(batch)
        raw += len(value)
        processor.handle("logs.raw", 0, offset, value)
    processor.handle("logs.raw", 0, 99, b"\x07 not a record")
    raw += len(b"\x07 not a record")
    processor.sent_curated(40)  # what the worker's send() would have counted

    got = scrape(WorkerCollector(processor, LagCache("g", "logs.raw", lambda: {0: 5, 1: 0})))
    assert got[("hindsight_lines_in_total", ())] == 5
    assert got[("hindsight_lines_out_total", ())] == 3  # a@1, a@2, a@3
    assert got[("hindsight_triggers_total", ())] == 1
    assert got[("hindsight_trigger_lines_total", (("reason", "error"),))] == 3
    assert got[("hindsight_trigger_bytes_total", (("reason", "error"),))] == 35
    assert got[("hindsight_kept_bytes_total", ())] == 35
    assert got[("hindsight_rule_kept_lines_total", (("rule", "tag-cart"),))] == 3
    assert got[("hindsight_rule_kept_bytes_total", (("rule", "tag-cart"),))] == 35
    assert got[("hindsight_rule_dropped_lines_total", (("rule", "mute-health"),))] == 1
    assert got[("hindsight_rule_dropped_bytes_total", (("rule", "mute-health"),))] == 7
    assert got[("hindsight_raw_messages_total", ())] == 5
    assert got[("hindsight_raw_bytes_total", ())] == raw
    assert got[("hindsight_avoided_bytes_total", ())] == raw - 40
    assert sum(v for (name, _), v in got.items() if name == "hindsight_dlq_records_total") == 1
    assert got[("hindsight_sessions", ())] == 3
    assert got[("hindsight_buffer_lines", ())] == 5  # every line stays in its chunk for the lookback
    # the lines' templates: each message above has a shape of its own (the trigger is off by default)
    shapes = {mask(r["message"]) for batch in messages for r in batch}
    assert got[("hindsight_templates", ())] == got[("hindsight_novel_templates_total", ())] == len(shapes)
    assert got[("hindsight_novel_templates_suppressed_total", ())] == 0
    lag = ("hindsight_consumer_lag_messages", (("group", "g"), ("partition", "0"), ("topic", "logs.raw")))
    assert got[lag] == 5
    every = {name for name, _ in got}
    counters = {n for n in every if n.endswith("_total")}
    assert counters and all(n.startswith("hindsight_") for n in every)

    # a rebalance takes the partition away: its counts stay in the totals (counters never go back)
    processor.drop("logs.raw", 0)
    after = scrape(WorkerCollector(processor))
    assert after[("hindsight_lines_in_total", ())] == 5 and after[("hindsight_sessions", ())] == 0
    assert after[("hindsight_rule_dropped_lines_total", (("rule", "mute-health"),))] == 1


def test_lag_cache_keeps_the_last_answer_and_rate_limits() -> None:
    calls: list[int] = []

    def fetch() -> dict[int, int]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("broker away")
        return {0: len(calls)}

    cache = LagCache("g", "t", fetch, every_s=0.0)
    assert cache.get() == {0: 1}
    assert cache.get() == {0: 1}  # the failure keeps the last good value
    assert cache.get() == {0: 3}
    slow = LagCache("g", "t", fetch, every_s=3600)
    slow.get()
    slow.get()
    assert len(calls) == 4


def test_first_fetch_and_first_warning_on_a_machine_booted_seconds_ago(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """time.monotonic() counts from boot: right after it, it is smaller than any rate limit. Nothing
    may treat 0.0 as "long ago" (the lag cache did, and never fetched in the first hour)."""
    import pipeline.metrics
    import pipeline.rules.compiled
    import pipeline.sources.publisher

    for module in (pipeline.metrics, pipeline.rules.compiled, pipeline.sources.publisher):
        monkeypatch.setattr(module.time, "monotonic", lambda: 3.0)  # booted three seconds ago
    assert LagCache("g", "t", lambda: {0: 7}, every_s=10.0).get() == {0: 7}
    faults = pipeline.rules.compiled.CustomFaults()
    with caplog.at_level("WARNING"):
        faults.failed("r", "m:f", RuntimeError("x"))
        faults.failed("r", "m:f", RuntimeError("x"))
    assert sum("custom predicate raised" in r.getMessage() for r in caplog.records) == 1
    shipper = SimpleNamespace(_warned_at=None, dropped=1, invalid=0)  # the state _warn reads and writes
    caplog.clear()
    with caplog.at_level("WARNING"):
        pipeline.sources.publisher.Shipper._warn(shipper, "queue full")  # type: ignore[arg-type]
        pipeline.sources.publisher.Shipper._warn(shipper, "queue full")  # type: ignore[arg-type]
    assert sum("log lines not shipped" in r.getMessage() for r in caplog.records) == 1
