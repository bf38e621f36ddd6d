"""Two worker processes in one group, each owning some partitions, on the real broker: a security flag
seen by one captures its endpoint's lines in the other, and one user's auth failures spread over both
fire once. The stored set equals the ground truth."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.ingest.stage import SessionPartitioner
from pipeline.ops.demo import start_child
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_summary
from pipeline.store.query import QueryFilters
from pipeline.types import LogRecord
from pipeline.wire.records import normalize
from tests.integration.helpers import consume_all, eventually, pipeline_running, wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
S = 1_000_000


def members(settings: Settings) -> list[set[int]]:
    """The partitions of the sessions topic each member of the worker group owns."""
    admin = AdminClient(settings.kafka_client_config())
    try:
        group = admin.describe_consumer_groups([settings.app_id], request_timeout=5)[settings.app_id].result()
    except Exception:  # the group does not exist yet
        return []
    if not str(group.state).endswith("STABLE"):
        return []
    return [
        {tp.partition for tp in m.assignment.topic_partitions if tp.topic == settings.sessions_topic}
        for m in group.members
        if m.assignment
    ]


def rec(t0: int, t_s: float, session: str, user: str, endpoint: str, **fields: Any) -> LogRecord:
    return normalize(
        {
            "timestamp": t0 + int(t_s * S),
            "service": "shop",
            "level": "DEBUG",
            "message": f"{session} {endpoint} @{t_s:g}",
            "session_id": session,
            "user_id": user,
            "endpoint": endpoint,
            "latency_ms": 5.0,
            "status_code": 200,
            **fields,
        }
    )


def test_two_workers_share_captures_and_auth_failure_counts(ns: Settings, tmp_path: Path) -> None:
    settings = ns.model_copy(update={"key_budget_lps": 1e6, "global_budget_lps": 1e7})
    t0 = time.time_ns() // 1000 - 60 * S
    part = SessionPartitioner(settings.partitions)
    # sessions on every partition: whichever worker sees a trigger, the other holds lines it captures
    pay = [f"x-{i}" for i in range(9)]
    assert {part(s) for s in pay} == set(range(settings.partitions))
    first: list[LogRecord] = []
    for i, sid in enumerate(pay):
        first += [rec(t0, t, sid, f"ux-{i}", "/pay") for t in range(0, 40, 3)]
    first.append(rec(t0, 5, "x-0", "ux-0", "/pay", message="x-0 flagged", security_flags=["sqli"]))
    # four auth failures of user uy, each in its own session (spread over the partitions)...
    auth = [f"y-{i}" for i in range(5)]
    assert len({part(s) for s in auth}) > 1
    first += [rec(t0, 1 + i, auth[i], "uy", "/login", status_code=401) for i in range(4)]
    first += [rec(t0, t, f"z-{i}", f"uz-{i}", "/login") for i in range(4) for t in (0.5, 7 + i, 50)]
    # ...and the fifth, published once the four are on the shared log: the one that completes it
    fifth = rec(t0, 6, "y-4", "uy", "/login", status_code=401, message="y-4 fifth failure")
    later = [fifth, rec(t0, 8, "y-4", "uy", "/login"), rec(t0, 12, "y-4", "uy", "/cart")]

    def kept(r: LogRecord) -> bool:
        ts, sid, ep = (r["timestamp"] - t0) / S, r["session_id"], r["endpoint"]
        return (
            (sid == "x-0" and 5 - 60 <= ts <= 5 + 30)  # the flag's session, lookback to follow
            or (ep == "/pay" and 5 <= ts <= 35)  # its endpoint, in every session and process
            or (sid == "y-4" and 6 - 60 <= ts <= 6 + 30)  # the session whose failure fired
            or (ep == "/login" and 6 <= ts <= 36)  # its endpoint everywhere
        )

    expected = {(r["session_id"], r["message"], r["timestamp"]) for r in first + later if kept(r)}

    with pipeline_running(settings, tmp_path / "logs") as children:
        children.append(
            start_child("worker2", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs")
        )

        def two_owners() -> list[set[int]] | None:
            owned = members(settings)
            return owned if len(owned) == 2 and all(owned) else None

        owners = eventually(two_owners, 90, "two workers")
        # each process says when it is ready, and the workers name their partitions
        logs = {c.name: c.log_file for c in children}
        eventually(lambda: "sink ready" in logs["sink"].read_text() or None, 30, "the sink's ready line")

        def ready(name: str) -> bool | None:
            return "worker ready" in logs[name].read_text() or None

        for name in ("worker", "worker2"):
            eventually(partial(ready, name), 30, f"{name}'s ready line")
        publisher = Publisher(settings)
        for r in first:
            publisher.publish(r)
        assert publisher.flush(30) == 0
        eventually(
            lambda: (
                len([m for m in consume_all(settings, settings.shared_topic, 0, 1) if b'"auth"' in m.value()])
                >= 4
                or None
            ),
            60,
            "four auth failures on the shared log",
        )
        for r in later:
            publisher.publish(r)
        assert publisher.flush(30) == 0
        eventually(
            lambda: remote_summary(query_api(settings))["lines"] >= len(expected) or None,
            90,
            "the kept lines",
        )
        wait_drained(settings, 90)  # anything extra has arrived once every stage committed all
        rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
        for child in children:
            assert child.proc.poll() is None, f"{child.name} exited"
    flagged = part("x-0")
    assert any(flagged not in o and o & {part(s) for s in pay} for o in owners)  # the other process held /pay
    got = {(r["session_id"], r["message"], r["timestamp_us"]) for r in rows}
    assert got == expected
    fired = {r["trigger_id"] for r in rows if "auth_failures" in r["trigger_reasons"]}
    assert len(fired) == 1, fired
