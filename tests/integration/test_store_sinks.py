"""PostgreSQL and Redis sinks behind the real runner and broker, on private servers the fixtures start."""

from __future__ import annotations

import psycopg
import pytest
import redis

from connectors.base.runner import SinkRunner
from connectors.postgres import PostgresSink
from connectors.redis_recent import RedisSink, key_for, recent_lines
from pipeline.kafka import ensure_topics
from pipeline.settings import Settings
from tests.conftest import PrivateRedis

from .helpers import consume_all, eventually
from .test_sink_runner import committed, produce_curated, run_in_thread

pytestmark = pytest.mark.integration


def test_postgres_sink_creates_its_table_dedups_and_resumes_after_an_outage(
    ns: Settings, postgres_dsn: str
) -> None:
    settings = ns.model_copy(update={"sink_batch_ms": 200, "sink_max_backoff_s": 0.5})
    ensure_topics(settings)
    table = f"logs_{settings.app_id.rsplit('-', 1)[-1]}"
    sink = PostgresSink(postgres_dsn, table)  # creates the table
    admin_dsn = postgres_dsn.rsplit("/", 1)[0] + "/template1"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        # the database goes away: no new connections, and the sink's own is cut
        admin.execute("ALTER DATABASE postgres ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'postgres'")
        produce_curated(settings, messages=6, per_message=5)
        produce_curated(settings, messages=2, per_message=5)  # a redelivery of the first 10 lines
        runner = SinkRunner(settings, sink)
        thread = run_in_thread(runner)
        try:
            eventually(lambda: runner.metrics.retries >= 2 or None, 30, "retries while PostgreSQL is down")
            assert committed(settings, runner.group) == 0
            admin.execute("ALTER DATABASE postgres ALLOW_CONNECTIONS true")
            eventually(
                lambda: committed(settings, runner.group) == 8 or None,
                30,
                "offsets committed after it is back",
            )
        finally:
            runner.stop()
            thread.join(15)
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(
            f"SELECT message, attributes, trigger_reasons FROM {table} ORDER BY ts"
        ).fetchall()
    assert [r[0] for r in rows] == [f"line {i}" for i in range(30)]  # 40 delivered, 30 distinct raw lines
    assert rows[0][2] == ["error"] and rows[0][1] == {}


def test_a_row_postgresql_refuses_goes_to_the_dlq_and_its_neighbours_are_stored(
    ns: Settings, postgres_dsn: str
) -> None:
    """PostgreSQL text cannot hold a NUL: that row is dead-lettered with PostgreSQL's reason (the
    runner bisects the batch), the other 23 are stored, and the offsets are committed."""
    settings = ns.model_copy(update={"sink_batch_ms": 200})
    ensure_topics(settings)
    table = f"reject_{settings.app_id.rsplit('-', 1)[-1]}"
    sink = PostgresSink(postgres_dsn, table)
    produce_curated(settings, messages=3, per_message=8, poison_at=13, poison="bad\x00byte")
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: committed(settings, runner.group) == 3 or None, 60, "offsets committed")
    finally:
        runner.stop()
        thread.join(15)
    [dead] = consume_all(settings, settings.dlq_topic, expect=1)
    headers = {k: v.decode() for k, v in dead.headers() or []}
    assert headers["hindsight.error_type"] == "rejected_by_store" and "NUL" in headers["hindsight.reason"]
    assert runner.metrics.dlq_rows == 1
    with psycopg.connect(postgres_dsn) as conn:
        stored = sorted(r[0] for r in conn.execute(f"SELECT message FROM {table}").fetchall())
    assert stored == sorted(f"line {i}" for i in range(24) if i != 13)


def test_redis_sink_keeps_recent_lines_per_user_and_session_with_a_ttl(ns: Settings, redis_url: str) -> None:
    settings = ns.model_copy(update={"sink_batch_ms": 200})
    ensure_topics(settings)
    client = redis.Redis.from_url(redis_url)
    sink = RedisSink(client, keep=3, ttl_s=600)
    produce_curated(settings, messages=2, per_message=5)
    produce_curated(settings, messages=1, per_message=5)  # redelivered
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: committed(settings, runner.group) == 3 or None, 30, "offsets committed")
    finally:
        runner.stop()
        thread.join(15)
    newest = recent_lines(client, "session", "s1", limit=10)
    assert [r["message"] for r in newest] == ["line 9", "line 8", "line 7"]  # newest first, 3 kept
    assert [r["message"] for r in recent_lines(client, "session", "s0")] == ["line 4", "line 3", "line 2"]
    assert 0 < int(client.ttl(key_for("session", "s0"))) <= 600


def test_redis_stopped_mid_stream_the_sink_waits_then_catches_up(
    ns: Settings, redis_server: PrivateRedis
) -> None:
    """A real Redis outage: the server stops while lines arrive; nothing is committed meanwhile, the
    sink retries, and after the restart every session's newest lines are there."""
    settings = ns.model_copy(update={"sink_batch_ms": 200, "sink_max_backoff_s": 1.0})
    ensure_topics(settings)
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()  # the session keys (s0, s1) are this test's alone
    sink = RedisSink(client, keep=100, ttl_s=600)
    produce_curated(settings, messages=2, per_message=5)  # lines 0-9, sessions s0 and s1
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: committed(settings, runner.group) == 2 or None, 60, "the first lines stored")
        redis_server.stop()
        print(f"Redis stopped with {committed(settings, runner.group)} messages committed; more arrive")
        produce_curated(settings, messages=2, per_message=5, first=10)  # lines 10-19, during the outage
        eventually(lambda: runner.metrics.retries >= 3 or None, 60, "retries while Redis is down")
        assert committed(settings, runner.group) == 2
        redis_server.start()
        eventually(lambda: committed(settings, runner.group) == 4 or None, 60, "catching up afterwards")
    finally:
        runner.stop()
        thread.join(15)
        if redis_server.proc is None:
            redis_server.start()
    for session, first in (("s0", 0), ("s1", 5)):
        got = sorted(r["message"] for r in recent_lines(client, "session", session, limit=100))
        assert got == sorted(
            [f"line {first + i}" for i in range(5)] + [f"line {first + 10 + i}" for i in range(5)]
        )
