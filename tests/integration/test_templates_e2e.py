"""The novel_template trigger through the real broker (publisher -> ingest -> worker -> ClickHouse
sink): a session whose INFO line has a shape never seen before keeps its lookback and follow-up with
reason novel_template; the same shape later triggers nothing; a burst of new shapes after a deploy
captures only the budget's worth; the store's catalog lists the new templates and the kept lines
carry their template id. The stored set equals the ground truth exactly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.engine.templates import mask, template_id
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_sql, remote_summary
from pipeline.store.query import QueryFilters, templates_sql
from pipeline.types import LogRecord

from .helpers import eventually, pipeline_running, wait_drained
from .test_cli_smoke import cli, ok

pytestmark = pytest.mark.integration
S = 1_000_000
LOOKBACK_S, FOLLOW_S, BUDGET = 10, 5, 3
NOVEL = "certificate verify failed for upstream"


def known(i: int) -> str:
    """Lines of shapes every session logs (their values differ, their templates do not)."""
    return [f"cart {i} loaded for u-{i * 3}", f"item {i * 7} added", f"checkout step {i}"][i % 3]


class Work:
    def __init__(self, t0_us: int) -> None:
        self.t0 = t0_us
        self.lines: list[LogRecord] = []
        self.expected: set[tuple[str, str, int]] = set()

    def add(self, session: str, t: float, message: str) -> LogRecord:
        rec: LogRecord = {
            "timestamp": self.t0 + int(t * S),
            "service": "shop",
            "level": "INFO",
            "message": message,
            "session_id": session,
            "endpoint": "/pay",
        }
        self.lines.append(rec)
        return rec

    def chatter(self, session: str, start: float, end: float, step: float = 0.5) -> None:
        t, i = start, 0
        while t < end:
            self.add(session, t, known(i))
            t, i = t + step, i + 1

    def keep(self, session: str, since: float, until: float) -> None:
        """The ground truth: this session's lines within [since, until] (event seconds) are stored."""
        for rec in self.lines:
            ts = (rec["timestamp"] - self.t0) / S
            if rec["session_id"] == session and since <= ts <= until:
                self.expected.add((session, rec["message"], rec["timestamp"]))


def workload(t0_us: int) -> Work:
    w = Work(t0_us)
    for s in range(8):  # the learning period (5 s): every common shape is learned, nothing fires
        w.chatter(f"warm{s}", 0 + s * 0.1, 8)
    for s in range(4):
        w.chatter(f"known{s}", 10 + s * 0.1, 30)
    w.chatter("novel", 30, 40)  # lookback
    w.add("novel", 40, NOVEL)  # INFO, a shape never seen
    w.chatter("novel", 40.5, 50)  # follow-up until 45
    w.keep("novel", 40 - LOOKBACK_S, 40 + FOLLOW_S)
    w.chatter("repeat", 55, 60)
    w.add("repeat", 60, NOVEL)  # the same shape again: known now
    w.chatter("repeat", 60.5, 64)
    for i in range(10):  # a deploy: every session logs a shape of its own within a second
        session = f"deploy{i}"
        w.chatter(session, 75, 80)
        w.add(session, 80 + i * 0.1, f"v2 {'x' * (i + 1)} ready")
        w.chatter(session, 81, 89)
        if i < BUDGET:  # the first three (in the log's order) capture; the rest are only learned
            w.keep(session, 80 + i * 0.1 - LOOKBACK_S, 80 + i * 0.1 + FOLLOW_S)
    w.lines.sort(key=lambda r: r["timestamp"])
    return w


def test_a_new_shape_keeps_its_context_once_and_a_deploy_stays_in_budget(
    ns: Settings, tmp_path: Path
) -> None:
    settings = ns.model_copy(
        update={
            "partitions": 1,  # one order of processing: the budget's three are the first three
            "novel_template": True,
            "novel_template_learning_s": 5.0,
            "novel_template_budget": BUDGET,
            "novel_template_budget_window_s": 30.0,  # the firing at 40 s is out of it by the deploy
            "lookback_s": float(LOOKBACK_S),
            "follow_s": float(FOLLOW_S),
            "templates_flush_s": 1.0,
            "key_budget_lps": 1e6,
            "global_budget_lps": 1e7,
        }
    )
    work = workload(time.time_ns() // 1000 - 300 * S)
    with pipeline_running(settings, tmp_path / "logs"):
        publisher = Publisher(settings)
        for rec in work.lines:
            publisher.publish(rec)
        assert publisher.flush(30) == 0 and publisher.metrics.failed == 0
        api = query_api(settings)
        eventually(lambda: remote_summary(api)["lines"] >= len(work.expected) or None, 120, "the kept lines")
        wait_drained(settings, 90)
        rows = remote_query(api, QueryFilters(limit=100_000))

        def catalog() -> list[dict[str, Any]] | None:
            found = remote_sql(api, templates_sql(settings.clickhouse_database, "shop", work.t0), 100)
            return found if len(found) >= 3 + 1 + 10 else None

        templates = eventually(catalog, 60, "the template catalog in the store")
        novel_id = template_id(mask(NOVEL))
        by_template = remote_query(api, QueryFilters(template=novel_id))
        # the same through the CLI, as a user runs it
        listed = [
            orjson.loads(x)
            for x in ok(cli(settings, "templates", "--since", "1h", "--format", "jsonl")).split("\n")
            if x
        ]
        queried = ok(cli(settings, "query", "--template", novel_id, "--format", "jsonl"))
    got = {(r["session_id"], r["message"], r["timestamp_us"]) for r in rows}
    assert len(rows) == len(got)
    assert got == work.expected, (sorted(got - work.expected)[:10], sorted(work.expected - got)[:10])
    assert {tuple(r["trigger_reasons"]) for r in rows} == {("novel_template",)}
    assert {r["session_id"] for r in rows} == {"novel", "deploy0", "deploy1", "deploy2"}
    assert all(r["template_id"] == template_id(mask(r["message"])) for r in rows)
    assert [r["session_id"] for r in by_template] == ["novel"]  # the repeat's line was not kept
    assert [orjson.loads(x)["message"] for x in queried.splitlines() if x] == [NOVEL]
    assert {t["template_id"] for t in listed} == {t["template_id"] for t in templates}
    assert [t["first_seen_us"] for t in listed] == sorted((t["first_seen_us"] for t in listed), reverse=True)
    by_id = {t["template_id"]: t for t in templates}
    novel = by_id[novel_id]
    assert (novel["template"], novel["count"], novel["triggered"]) == (NOVEL, 2, 1)  # seen twice, fired once
    deploys = [by_id[template_id(mask(f"v2 {'x' * (i + 1)} ready"))] for i in range(10)]
    assert [d["triggered"] for d in deploys] == [1, 1, 1] + [0] * 7  # every shape learned, three fired
    assert by_id[template_id(mask(known(0)))]["count"] > 100
