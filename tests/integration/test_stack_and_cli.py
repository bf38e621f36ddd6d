"""The broker, topics and commands against the real broker; a clear line when Kafka is away."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from confluent_kafka.admin import ConfigResource

from pipeline.kafka import admin, ensure_topics
from pipeline.ops.services import settings_env
from pipeline.ops.stack import stack_status
from pipeline.settings import Settings
from pipeline.wire.raw import RawDecoder

from .helpers import consume_all

pytestmark = pytest.mark.integration


def hindsight(settings: Settings, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "pipeline.ops.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **settings_env(settings), **(env or {})},
    )


def test_topics_created_with_explicit_configs_idempotently(ns: Settings) -> None:
    created = ensure_topics(ns)
    assert sorted(created) == sorted(
        [
            ns.raw_topic,
            ns.sessions_topic,
            ns.curated_topic,
            ns.dlq_topic,
            ns.rules_topic,
            ns.stats_topic,
            ns.shared_topic,
        ]
    )
    assert ensure_topics(ns) == []
    client = admin(ns)
    resources = [ConfigResource("topic", t) for t in (ns.raw_topic, ns.rules_topic, ns.shared_topic)]
    configs = {r.name: f.result() for r, f in client.describe_configs(resources).items()}
    assert configs[ns.raw_topic]["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert configs[ns.raw_topic]["cleanup.policy"].value == "delete"
    assert configs[ns.rules_topic]["cleanup.policy"].value == "compact"
    assert configs[ns.shared_topic]["retention.ms"].value == str(3600 * 1000)
    meta = client.list_topics(timeout=5).topics
    assert len(meta[ns.raw_topic].partitions) == ns.partitions
    assert len(meta[ns.shared_topic].partitions) == 1  # one order for every worker


def test_stack_status_and_idempotent_up(kafka: Settings) -> None:
    status = stack_status(kafka)
    assert status.running
    if status.managed:
        assert status.pid is not None
    proc = hindsight(kafka, "stack", "status", "--json")
    assert proc.returncode == 0 and orjson.loads(proc.stdout)["running"] is True
    proc = hindsight(kafka, "stack", "up")
    assert proc.returncode == 0, proc.stderr
    assert b"already up" in proc.stdout or b"started" not in proc.stdout


def test_publish_command_reads_json_lines(ns: Settings) -> None:
    ensure_topics(ns)
    lines = b"\n".join(
        [
            orjson.dumps({"service": "cli", "level": "INFO", "message": "one", "session_id": "c1"}),
            b"",
            orjson.dumps({"service": "cli", "level": "ERROR", "message": "two", "session_id": "c1"}),
            b"{not json",
        ]
    )
    proc = hindsight(ns, "publish", stdin=lines)
    report = orjson.loads(proc.stdout)
    assert report == {"published": 2, "rejected": 1, "messages": 1, "failed": 0}
    assert proc.returncode == 1  # a rejected line is reported, not silently skipped
    assert b"line 4: rejected" in proc.stderr
    [msg] = consume_all(ns, ns.raw_topic, expect=1)
    assert msg.key() == b"c1"
    records, errors = RawDecoder(1 << 20).decode(msg.value())
    assert errors == [] and [r["message"] for r in records] == ["one", "two"]


def test_unreachable_broker_fails_fast_with_one_line(ns: Settings) -> None:
    """It gives up after its request timeout (the subprocess' own 60 s limit guards against a hang)
    and says so in one line, naming the address."""
    env = {"HINDSIGHT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "HINDSIGHT_REQUEST_TIMEOUT_S": "5"}
    proc = hindsight(ns, "topics", env=env)
    assert proc.returncode == 1  # a runtime failure (2 is for usage errors)
    err = proc.stderr.decode().strip().splitlines()
    assert err == [err[-1]] and "127.0.0.1:1" in err[-1] and "Traceback" not in proc.stderr.decode()


def test_configured_cluster_is_used_and_nothing_started(kafka: Settings) -> None:
    from pipeline.ops.stack import stack_down

    external = kafka.model_copy(update={"kafka_bootstrap_servers": kafka.bootstrap})
    status = stack_status(external)
    assert status.running and not status.managed and status.pid is None
    assert stack_down(external) is False  # a cluster we did not start is never stopped
    proc = hindsight(kafka, "stack", "status", env={"HINDSIGHT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})
    assert proc.returncode == 0 and b"external cluster" in proc.stdout


def test_an_empty_query_says_why_it_may_be_empty(ns: Settings) -> None:
    """`(no rows)` alone left a newcomer guessing: the query names the missing worker and sink (or the
    broker that does not answer) and what to start."""
    ensure_topics(ns)
    proc = hindsight(ns, "query", "--session", "nobody")
    assert proc.returncode == 0, proc.stderr.decode()
    assert "(no rows)" in proc.stdout.decode()
    assert "no worker and no sink is running" in proc.stderr.decode()
    env = {"HINDSIGHT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    proc = hindsight(ns, "query", "--session", "nobody", env=env)
    assert "hint: the broker at 127.0.0.1:1 does not answer" in proc.stderr.decode()
