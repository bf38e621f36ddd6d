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

from .helpers import eventually
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
