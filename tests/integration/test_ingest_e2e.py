"""Real producers, real shapes, real keys: one ground-truth workload published at once through five
producers (our publisher keyed by session with murmur2; structlog and Fluent Bit lines keyed by pod
with librdkafka's default partitioner; ECS lines unkeyed; Vector events keyed by session with the Java
hash), through ingest, worker and sink: the stored lines are exactly the ground truth, also when the
ingest process is killed with SIGKILL between producing lines and committing them, and restarted."""

from __future__ import annotations

import signal
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.kafka import ensure_topics
from pipeline.ops.demo import Child, start_child
from pipeline.ops.workload import Workload, generate
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_summary
from pipeline.store.query import QueryFilters
from pipeline.types import LogRecord
from pipeline.wire.frames import decode_framed
from tests.conftest import free_port
from tests.reliability.test_faults import group_owns

from .helpers import consume_all, eventually, group_partitions, pipeline_running, wait_drained

pytestmark = pytest.mark.integration

PODS = [f"pod-{i}" for i in range(8)]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat()


def context(rec: LogRecord) -> dict[str, Any]:
    """The line's fields besides time, level, service and message, as applications log them."""
    keys = ("session_id", "user_id", "endpoint", "transaction_id", "latency_ms", "status_code",
            "security_flags", "attributes")  # fmt: skip
    return {k: rec[k] for k in keys if rec.get(k) not in (None, [], {})}  # type: ignore[literal-required]


def structlog(rec: LogRecord) -> dict[str, Any]:
    return {"event": rec["message"], "level": rec["level"].lower(), "timestamp": iso(rec["timestamp"]),
            "service": rec["service"], **context(rec)}  # fmt: skip


def ecs(rec: LogRecord) -> dict[str, Any]:
    return {"@timestamp": iso(rec["timestamp"]), "log.level": rec["level"], "message": rec["message"],
            "service.name": rec["service"], "ecs.version": "1.6.0", **context(rec)}  # fmt: skip


def app_line(rec: LogRecord) -> str:
    """What the application wrote to stdout: its own JSON line."""
    return orjson.dumps({"timestamp": rec["timestamp"], "level": rec["level"], "msg": rec["message"],
                         "service": rec["service"], **context(rec)}).decode()  # fmt: skip


def fluent_bit(rec: LogRecord, pod: str) -> dict[str, Any]:
    k8s = {"pod_name": pod, "namespace_name": "prod", "labels": {"app": rec["service"]}}
    return {
        "@timestamp": rec["timestamp"] / 1e6,
        "log": app_line(rec) + "\n",
        "stream": "stdout",
        "kubernetes": k8s,
    }


def vector(rec: LogRecord, pod: str) -> dict[str, Any]:
    k8s = {"pod_name": pod, "pod_namespace": "prod", "pod_labels": {"app": rec["service"]}}
    return {"message": app_line(rec), "timestamp": iso(rec["timestamp"]), "source_type": "kubernetes_logs",
            "kubernetes": k8s}  # fmt: skip


class Producers:
    """The five ways lines reach logs.raw in this test."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher = Publisher(settings)  # canonical batches, murmur2 by session
        config = settings.kafka_client_config()
        self.librdkafka = Producer({**config, "linger.ms": 5})  # kcat, Vector, Fluent Bit: consistent_random
        self.java = Producer({**config, "linger.ms": 5, "partitioner": "murmur2_random"})
        self.sent = 0

    def send(self, i: int, rec: LogRecord) -> None:
        topic = self.settings.raw_topic
        pod = PODS[i % len(PODS)]
        kind = i % 5
        if kind == 0:
            self.publisher.publish(rec)
        elif kind == 1:
            self.librdkafka.produce(topic, orjson.dumps(structlog(rec)), pod.encode())
        elif kind == 2:
            self.librdkafka.produce(topic, orjson.dumps(ecs(rec)))  # no key
        elif kind == 3:
            self.librdkafka.produce(topic, orjson.dumps(fluent_bit(rec, pod)), pod.encode())
        else:
            self.java.produce(topic, orjson.dumps(vector(rec, pod)), (rec["session_id"] or "").encode())
        self.sent += 1
        if self.sent % 500 == 0:
            self.librdkafka.poll(0)
            self.java.poll(0)

    def flush(self) -> None:
        assert self.publisher.flush(30) == 0 and self.publisher.metrics.failed == 0
        assert self.librdkafka.flush(30) == 0 and self.java.flush(30) == 0


def stored(settings: Settings, work: Workload) -> list[tuple[str, str, int]]:
    """The stored lines; any beyond the ground truth are printed with why they were kept."""
    eventually(
        lambda: remote_summary(query_api(settings))["lines"] >= len(work.expected) or None,
        180,
        "every expected line stored",
    )
    wait_drained(settings, 120)  # anything extra has arrived once every stage committed all
    rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
    for r in rows:
        if (r["session_id"], r["message"], r["timestamp_us"]) not in work.expected:
            print(
                "extra:",
                r["session_id"],
                r["timestamp_us"],
                r["message"],
                r["trigger_reasons"],
                r["trigger_id"],
            )
    return [(r["session_id"], r["message"], r["timestamp_us"]) for r in rows]


def workload(settings: Settings) -> Workload:
    return generate(
        sessions=80,
        requests_per_session=6,
        error_rate=0.12,
        lookback_s=settings.lookback_s,
        follow_s=settings.follow_s,
        latency_floor_ms=settings.latency_floor_ms,
        seed=23,
    )


def test_any_producer_any_key_any_shape_stores_exactly_the_ground_truth(ns: Settings, tmp_path: Path) -> None:
    settings = ns.model_copy(update={"key_budget_lps": 1e6, "global_budget_lps": 1e7})
    work = workload(settings)
    with pipeline_running(settings, tmp_path / "logs"):
        producers = Producers(settings)
        for i, rec in enumerate(work.lines):
            producers.send(i, rec)
        producers.flush()
        got = stored(settings, work)
    assert len(got) == len(set(got)), "duplicate rows after dedup"
    assert set(got) == work.expected


def test_ingest_killed_between_produce_and_commit_loses_and_duplicates_nothing(
    ns: Settings, tmp_path: Path
) -> None:
    """The hard moment for at-least-once: ingest has produced lines but its commit is lost. The test
    makes that moment certain: ingest is killed with SIGKILL after it passed the second third on,
    and its group's offsets are rewound to where they stood before that third (what a crash between
    produce and commit leaves); the restarted ingest produces those lines again. The worker must drop
    every repeat (counted) and the stored lines must be exactly the ground truth."""
    settings = ns.model_copy(update={"key_budget_lps": 1e6, "global_budget_lps": 1e7})
    work = workload(settings)
    third = len(work.lines) // 3
    port = free_port()
    with pipeline_running(settings, tmp_path / "logs", ("--metrics-port", str(port))) as children:
        producers = Producers(settings)
        eventually(lambda: group_owns(settings, settings.ingest_group, settings.raw_topic) or None, 120,
                   "ingest to own logs.raw")  # fmt: skip
        for i, rec in enumerate(work.lines[:third]):
            producers.send(i, rec)
        producers.flush()
        first = eventually(lambda: all_committed(settings), 60, "ingest to pass the first third on")
        for i, rec in enumerate(work.lines[third : 2 * third], start=third):
            producers.send(i, rec)
        producers.flush()
        second = eventually(lambda: all_committed(settings), 60, "ingest to pass the second third on")
        children[2].proc.send_signal(signal.SIGKILL)
        children[2].proc.wait(10)
        # the dead member leaves the group after its session timeout; then its commit is undone
        eventually(lambda: rewind(settings, first) or None, 60, "the ingest group to be empty")
        print(f"ingest killed at raw offsets {second}, rewound to {first}")
        for i, rec in enumerate(work.lines[2 * third :], start=2 * third):
            producers.send(i, rec)
        producers.flush()
        children[2] = start_child("ingest2", ["--log-level", "INFO", "ingest"], settings, tmp_path / "logs")
        got = stored(settings, work)
        repeated = scrape_counter(port, "hindsight_repeated_lines_total")
    assert sum(second.values()) > sum(first.values()), "the rewind undid nothing"
    assert repeated > 0, "no line was sent twice: the fault did not land"
    assert len(got) == len(set(got)), "duplicate rows after dedup"
    assert set(got) == work.expected


def all_committed(settings: Settings) -> dict[int, int] | None:
    """Ingest's committed raw offsets per partition once they reach the topic's end, else None."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.ingest_group})
    parts = [TopicPartition(settings.raw_topic, p) for p in range(settings.partitions)]
    try:
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        done = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()
    return done if done == ends else None


def rewind(settings: Settings, offsets: dict[int, int]) -> bool:
    """Set the ingest group's committed offsets (the group must have no live member)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config())
    parts = [TopicPartition(settings.raw_topic, p, o) for p, o in offsets.items()]
    request = ConsumerGroupTopicPartitions(settings.ingest_group, parts)
    try:
        done = admin.alter_consumer_group_offsets([request], request_timeout=10)[
            settings.ingest_group
        ].result()
    except KafkaException:  # the dead member is still in the group
        return False
    return all(tp.error is None for tp in done.topic_partitions)


def scrape_counter(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_each_shapes_malformed_variants_are_dead_lettered_and_their_neighbours_stored(
    ns: Settings, tmp_path: Path
) -> None:
    from tests.unit.wire.test_shapes import MALFORMED, SHAPES

    settings = ns.model_copy(update={"key_budget_lps": 1e6, "global_budget_lps": 1e7})
    run = settings.app_id[-8:]
    producer = Producer(settings.kafka_client_config())
    kept: set[str] = set()
    for shape in sorted(MALFORMED):
        bad, _ = MALFORMED[shape]
        producer.produce(settings.raw_topic, orjson.dumps(bad), f"bad-{shape}".encode())
        for side in ("before", "after"):  # valid neighbours, in the same shape, one message each
            good = relabel(SHAPES[shape], f"{shape} {side} {run}")
            producer.produce(settings.raw_topic, orjson.dumps(good), PODS[0].encode())
            kept.add(f"{shape} {side} {run}")
    assert producer.flush(30) == 0
    with pipeline_running(settings, tmp_path / "logs"):
        dead = consume_all(settings, settings.dlq_topic, expect=len(MALFORMED))
        rows = eventually(
            lambda: (
                (r := remote_query(query_api(settings), QueryFilters(grep=run, limit=1000)))
                and len(r) >= len(kept)
                and r
            ),
            120,
            "the valid neighbours stored",
        )
    reasons = {(m.key() or b"").decode(): dict(m.headers() or []) for m in dead}
    assert set(reasons) == {f"bad-{shape}" for shape in MALFORMED}
    for shape, (_, error_type) in MALFORMED.items():
        headers = reasons[f"bad-{shape}"]
        assert headers["hindsight.error_type"].decode() == error_type, shape
        assert headers["hindsight.reason"] and headers["hindsight.stage"] == b"decode"
    assert {r["message"] for r in rows} == kept


def relabel(line: dict[str, Any], message: str) -> dict[str, Any]:
    """A copy of a shape's sample carrying another message (where that shape keeps its message)."""
    out = orjson.loads(orjson.dumps(line))
    if "record" in out:
        out["record"]["message"] = message
    elif "log" in out and isinstance(out["log"], str):
        out["log"] = orjson.dumps({**orjson.loads(out["log"]), "msg": message}).decode()
    elif "kubernetes" in out and "message" in out:
        out["message"] = orjson.dumps({**orjson.loads(out["message"]), "msg": message}).decode()
    else:
        for key in ("event", "msg", "message"):
            if key in out:
                out[key] = message
                break
    out_time = int(time.time() * 1000)  # recent, so the store's retention keeps it
    return stamp(out, out_time)


def stamp(line: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """Move a sample's event time to now (each shape keeps it in its own field)."""
    seconds = now_ms / 1000
    for key, value in (("@timestamp", seconds), ("time", now_ms), ("created", seconds)):
        if key in line:
            line[key] = value
    if "timestamp" in line:
        line["timestamp"] = iso(now_ms * 1000)
    if "record" in line:
        line["record"]["time"]["timestamp"] = seconds
    if isinstance(line.get("message"), str) and line["message"].startswith("{"):
        inner = orjson.loads(line["message"])
        inner.pop("ts", None)
        line["message"] = orjson.dumps(inner).decode()
    return line


def test_partitions_moving_between_ingest_members_reach_the_canonical_topic_once(
    ns: Settings, tmp_path: Path
) -> None:
    """A second ingest member joins while lines stream in, and leaves again: each time partitions
    move (cooperative rebalances) with polls in flight. What was produced from a moving partition is
    committed in the revocation callback, so its next owner starts after it: every raw line reaches
    logs.sessions exactly once, with no repeat left for the worker to drop."""
    settings = ns.model_copy(update={"partitions": 6, "ingest_session_timeout_s": 6.0})
    ensure_topics(settings)
    logs = tmp_path / "logs"
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    sent = 0

    def publish(n: int, seconds: float) -> None:  # single-line messages keyed by pod, n over `seconds`
        nonlocal sent
        started = time.monotonic()
        for i in range(1, n + 1):
            line = {"timestamp": 1_764_496_800_000_000 + sent, "service": "a", "level": "INFO",
                    "message": f"line {sent}", "session_id": f"s{sent % 97}"}  # fmt: skip
            producer.produce(settings.raw_topic, orjson.dumps(line), PODS[sent % len(PODS)].encode())
            sent += 1
            if i % 200 == 0:
                producer.poll(0)
                time.sleep(max(0.0, started + seconds * i / n - time.monotonic()))
        assert producer.flush(30) == 0

    def members() -> int:
        owned = group_partitions(settings, settings.ingest_group, settings.raw_topic)
        if owned is None or sorted(p for ps in owned.values() for p in ps) != list(range(6)):
            return 0
        return sum(1 for ps in owned.values() if ps)

    args = ["--log-level", "INFO", "ingest"]
    children: list[Child] = [start_child("ingest-a", args, settings, logs)]
    try:
        eventually(lambda: members() == 1 or None, 120, "ingest a to own logs.raw")
        publish(3000, 2.0)
        children.append(start_child("ingest-b", args, settings, logs))
        publish(6000, 8.0)  # partitions move to b while these stream in
        eventually(lambda: members() == 2 or None, 60, "the partitions to be shared by a and b")
        publish(3000, 3.0)
        children[1].stop()  # b leaves: its partitions move back to a
        publish(3000, 3.0)
        eventually(lambda: all_committed(settings) or None, 90, "ingest to commit every raw line")
        children[0].check()  # a is still running (b was stopped)
    finally:
        for child in reversed(children):
            child.stop()
    a_log = (logs / "ingest-a.log").read_text()
    assert "ingest partitions revoked" in a_log, "no partition moved away from a"
    reader = Consumer({**settings.kafka_client_config(), "group.id": "ends"})
    parts = [TopicPartition(settings.sessions_topic, p) for p in range(settings.partitions)]
    canonical = sum(reader.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    reader.close()
    origins: list[tuple[int, int]] = []
    for msg in consume_all(settings, settings.sessions_topic, canonical, timeout=30):
        o = decode_framed(msg.value() or b"").origins
        origins.extend(zip(o.raw_partition, o.raw_offset, strict=True))
    assert len(origins) - len(set(origins)) == 0, "raw lines produced twice across the rebalances"
    assert len(origins) == sent
