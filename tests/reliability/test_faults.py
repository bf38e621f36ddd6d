"""Faults on the real broker: the worker killed (-9) three times mid-stream, the broker restarted
while services publish, the PostgreSQL server stopped under its sink, a second worker joining. Each
fault waits for the state it claims (partitions owned, progress committed, lag) and says where it
landed; nothing lost, nothing duplicated after dedup."""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.base.runner import SinkRunner
from connectors.postgres import PostgresSink
from pipeline.kafka import ensure_topics, group_lag
from pipeline.ops.demo import start_child, wait_until
from pipeline.ops.stack import LocalBroker
from pipeline.ops.workload import IncidentWorkload, incident_workload
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_summary
from pipeline.store.query import QueryFilters
from pipeline.wire.curated import decode_curated
from pipeline.wire.raw import RawDecoder
from tests.conftest import PrivatePostgres
from tests.integration.helpers import (
    consume_all,
    eventually,
    group_partitions,
    pipeline_running,
    wait_drained,
)
from tests.integration.test_sink_runner import committed, produce_curated, run_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def sessions_committed(settings: Settings) -> int:
    """Offsets of logs.sessions the worker group committed (all partitions)."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id})
    try:
        parts = [TopicPartition(settings.sessions_topic, p) for p in range(settings.partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def worker_at_work(settings: Settings, what: str) -> str:
    """Wait until the worker group owns every partition of logs.sessions, has committed progress
    since this call and has lines still to read (lag > 0); the pipeline's state, said in words."""
    eventually(
        lambda: group_owns(settings, settings.app_id, settings.sessions_topic) or None,
        90,
        f"{what}: the worker owning every partition",
    )
    before = sessions_committed(settings)
    eventually(lambda: sessions_committed(settings) > before or None, 60, f"{what}: the worker committing")

    def lagging() -> int | None:
        lag = sum(group_lag(settings, settings.app_id, settings.sessions_topic).values())
        return lag if lag > 0 else None

    lag = eventually(lagging, 30, f"{what}: lines still to read (lag > 0)")
    return f"owns all {settings.partitions} partitions, committed {sessions_committed(settings)}, lag {lag}"


class Paced:
    """Publishes lines from a thread at a steady pace, so a fault lands while lines flow."""

    def __init__(self, settings: Settings, lines: Sequence[dict[str, object]], per_s: float) -> None:
        self.publisher = Publisher(settings)
        self.lines, self.per_s = lines, per_s
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        for i, record in enumerate(self.lines):
            ahead = start + i / self.per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            self.publisher.publish(record)  # type: ignore[arg-type]
            self.sent = i + 1

    def finish(self) -> None:
        self.thread.join(300)
        assert not self.thread.is_alive() and self.publisher.flush(30) == 0


def wait_for_every_line(settings: Settings, work: IncidentWorkload, timeout_s: float) -> None:
    """Until the store holds as many distinct lines as the ground truth; on timeout, the failure
    names each missing line with its session's injected incident, so a loss can be traced."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if remote_summary(query_api(settings))["lines"] >= len(work.expected):
            return
        time.sleep(1)
    rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
    got = {(r["session_id"], r["message"], r["timestamp_us"]) for r in rows}
    missing = sorted(work.expected - got, key=lambda m: m[2])
    incidents = {i.session_id: (i.kind, i.timestamp) for i in work.injected}
    t0 = work.lines[0]["timestamp"]
    detail = [
        f"{sid} +{(ts - t0) / 1e6:.2f}s {msg!r} incident={incidents.get(sid, ('?', 0))[0]}"
        f"@+{(incidents.get(sid, ('?', t0))[1] - t0) / 1e6:.2f}s"
        for sid, msg, ts in missing[:40]
    ]
    raise AssertionError(
        f"{len(missing)} of {len(work.expected)} lines missing after {timeout_s:.0f} s:\n" + "\n".join(detail)
    )


def assert_stored_exactly(settings: Settings, expected: set[tuple[str, str, int]]) -> None:
    """The store holds each expected line once, with its fields, and nothing else: compared as a
    multiset of raw ids and of (session, message, time). Lines the pipeline emitted more than once
    before the store's dedup (a killed worker's redelivery) are counted and reported."""
    rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
    ids = Counter((r["raw_topic"], r["raw_partition"], r["raw_offset"], r["raw_index"]) for r in rows)
    lines = Counter((r["session_id"], r["message"], r["timestamp_us"]) for r in rows)
    assert max(ids.values(), default=1) == 1, "a raw line id stored twice"
    assert max(lines.values(), default=1) == 1, "a line stored twice"
    assert set(lines) == expected, (len(set(lines) - expected), len(expected - set(lines)))
    emitted: Counter[tuple[str, int, int, int]] = Counter()
    for msg in consume_all(settings, settings.curated_topic, expect=10**9, timeout=10):  # all of it
        emitted.update((r["raw_topic"], r["raw_partition"], r["raw_offset"], r["raw_index"])
                       for r in decode_curated(msg.value()))  # fmt: skip
    again = sum(n - 1 for n in emitted.values() if n > 1)
    print(f"stored {len(rows)} lines exactly; {again} emitted again before the store's dedup")


def test_worker_killed_three_times_mid_stream_loses_and_duplicates_nothing(
    ns: Settings, tmp_path: Path
) -> None:
    """Each kill lands on a worker at work: it owns every partition, has committed progress and has
    lines to read, while lines keep being published; a replacement takes over each time."""
    settings = ns.model_copy(
        update={"worker_session_timeout_s": 6.0, "key_budget_lps": 1e6, "global_budget_lps": 1e7}
    )
    work = incident_workload(sessions=90, lookback_s=settings.lookback_s, follow_s=settings.follow_s, seed=8)
    rng = random.Random(5)
    with pipeline_running(settings, tmp_path / "logs") as children:
        paced = Paced(settings, work.lines, per_s=len(work.lines) / 40)  # over ~40 s
        for n in range(3):
            state = worker_at_work(settings, f"kill {n + 1}")
            time.sleep(rng.uniform(0.0, 0.5))  # mid-batch, mid-commit or between them
            print(f"kill {n + 1} after {paced.sent} of {len(work.lines)} lines published: {state}")
            assert paced.sent < len(work.lines), "publishing ended before the kill: not mid-stream"
            children[0].proc.send_signal(signal.SIGKILL)
            children[0].proc.wait(10)
            children[0] = start_child(
                f"worker{n + 2}", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs"
            )
        paced.finish()
        wait_for_every_line(settings, work, 150)
        wait_drained(settings, 120)  # anything extra has arrived once every stage committed all
        assert_stored_exactly(settings, work.expected)


def test_broker_restart_while_publishing_loses_nothing_and_the_worker_resumes(
    kafka: Settings, ns: Settings, tmp_path: Path
) -> None:
    if not kafka.local_broker:
        pytest.skip("restarts only the broker the tests started")
    settings = ns.model_copy(update={"partitions": 2, "worker_session_timeout_s": 6.0})
    ensure_topics(settings)
    worker = start_child("worker", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs")
    ingest = start_child("ingest", ["--log-level", "INFO", "ingest"], settings, tmp_path / "logs")
    publisher = Publisher(settings)
    sent: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            message = f"line {i}"
            publisher.publish_obj(
                {"service": "s", "level": "INFO", "message": message, "session_id": f"s{i % 50}"}
            )
            sent.append(message)
            i += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    broker = LocalBroker(kafka)
    try:
        # the fault lands on a running pipeline: ingest owns logs.raw and the worker logs.sessions
        wait_until(
            "ingest and the worker to own their partitions",
            lambda: (
                group_owns(settings, settings.ingest_group, settings.raw_topic)
                and group_owns(settings, settings.app_id, settings.sessions_topic)
            ),
            120,
            [worker, ingest],
        )
        assert broker.stop()
        at_stop = len(sent)
        time.sleep(3)  # the publisher keeps queueing locally meanwhile
        during = len(sent) - at_stop
        assert broker.start()
        print(f"broker stopped with ingest and the worker owning their partitions; {during} lines published "
              f"while it was down")  # fmt: skip
        assert during > 100, "no lines were published during the outage"
        time.sleep(3)
        stop.set()
        thread.join(10)
        assert publisher.flush(120) == 0 and publisher.metrics.failed == 0
        # every line in logs.raw exactly once (idempotent producer)
        consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"r-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([settings.raw_topic])
        decoder = RawDecoder(settings.max_record_bytes)
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while len(seen) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    seen.extend(r["message"] for r in decoder.decode(msg.value())[0])
        consumer.close()
        assert len(seen) == len(sent) and set(seen) == set(sent)
        # the worker resumes: a WARN line published now is forwarded
        probe = f"after restart {uuid.uuid4().hex[:6]}"
        publisher.publish_obj({"service": "s", "level": "WARN", "message": probe, "session_id": "probe"})
        assert publisher.flush(30) == 0
        curated = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"c-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
            }
        )
        curated.subscribe([settings.curated_topic])
        found = False
        # a deadline, not a speed claim: once in a full run the ingest's idempotent producer held two
        # messages ~100 s after the restart before it re-read its batch (seen once; 5-15 s otherwise)
        deadline = time.monotonic() + 240
        while not found and time.monotonic() < deadline:
            worker.check()
            ingest.check()
            for msg in curated.consume(100, timeout=0.5):
                if msg.error() is None and any(r["message"] == probe for r in decode_curated(msg.value())):
                    found = True
        curated.close()
        assert found, "the worker did not resume after the broker restart"
    finally:
        stop.set()
        ingest.stop()
        worker.stop()
        if broker.pid() is None:
            broker.start()


def test_postgres_stopped_mid_stream_the_sink_backs_off_within_its_cap_then_catches_up(
    ns: Settings, postgres_server: PrivatePostgres
) -> None:
    """A real store outage: the PostgreSQL server is stopped (sessions cut) while the sink runs and
    lines keep arriving, and started again. While it is down nothing is committed; the waits between
    retries double up to the cap and never pass it; afterwards every raw line is stored exactly once."""
    cap = 2.0
    settings = ns.model_copy(update={"sink_batch_ms": 200, "sink_max_backoff_s": cap})
    ensure_topics(settings)
    table = f"outage_{settings.app_id.rsplit('-', 1)[-1]}"
    sink = PostgresSink(postgres_server.dsn, table)
    produce_curated(settings, messages=5, per_message=10)  # lines 0-49
    runner = SinkRunner(settings, sink)
    thread = run_in_thread(runner)
    try:
        eventually(lambda: committed(settings, runner.group) == 5 or None, 60, "the first lines stored")
        postgres_server.stop()
        down_at = committed(settings, runner.group)
        print(f"PostgreSQL stopped: the sink had committed {down_at} messages; more arrive during the outage")
        produce_curated(settings, messages=5, per_message=10, first=50)  # lines 50-99, during the outage
        produce_curated(settings, messages=2, per_message=10)  # and a redelivery of lines 0-19
        eventually(lambda: len(runner.metrics.retry_waits_s) >= 6 or None, 60, "retries while it is down")
        assert committed(settings, runner.group) == down_at == 5  # nothing committed while down
        waits = list(runner.metrics.retry_waits_s)
        postgres_server.start()
        eventually(
            lambda: committed(settings, runner.group) == 12 or None, 90, "catching up after the outage"
        )
    finally:
        runner.stop()
        thread.join(15)
        if postgres_server.proc is None:
            postgres_server.start()
    # exponential from 0.2 s, capped: 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, ...
    assert waits[:4] == [0.2, 0.4, 0.8, 1.6] and max(waits) == cap and waits[4:] == [cap] * len(waits[4:])
    with psycopg.connect(postgres_server.dsn) as conn:
        stored = conn.execute(f"SELECT raw_id, message FROM {table}").fetchall()
    messages = sorted(m for _, m in stored)
    assert len(stored) == len({r for r, _ in stored}) == 100  # 120 delivered, 100 raw lines, once each
    assert messages == sorted(f"line {i}" for i in range(100))


def test_second_worker_joining_mid_stream_still_emits_every_trigger(ns: Settings, tmp_path: Path) -> None:
    """A second worker joins while the first is at work (lines to read, publishing going on); the
    test sees the group split the partitions between them, and the store is exact: with shared state
    (hindsight.shared) captures reach the other process's partitions too."""
    settings = ns.model_copy(
        update={
            "partitions": 4,
            "worker_session_timeout_s": 6.0,
            "key_budget_lps": 1e6,
            "global_budget_lps": 1e7,
        }
    )
    work = incident_workload(sessions=90, lookback_s=settings.lookback_s, follow_s=settings.follow_s, seed=12)
    with pipeline_running(settings, tmp_path / "logs") as children:
        paced = Paced(settings, work.lines, per_s=len(work.lines) / 30)  # over ~30 s
        state = worker_at_work(settings, "the second worker joining")
        print(f"worker2 joins after {paced.sent} of {len(work.lines)} lines published: {state}")
        assert paced.sent < len(work.lines), "publishing ended before the join: not mid-stream"
        children.append(
            start_child("worker2", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs")
        )
        split = eventually(lambda: members_with_partitions(settings) or None, 90, "the group splitting")
        print(f"assignment after the join: {split} (at {paced.sent} lines published)")
        assert len(split) == 2 and sorted(p for ps in split.values() for p in ps) == [0, 1, 2, 3]
        paced.finish()
        wait_for_every_line(settings, work, 150)
        wait_drained(settings, 120)  # anything extra has arrived once every stage committed all
        assert_stored_exactly(settings, work.expected)


def members_with_partitions(settings: Settings) -> dict[str, list[int]] | None:
    """logs.sessions partitions per member of the worker group, once stable with two members."""
    owned = group_partitions(settings, settings.app_id, settings.sessions_topic)
    return owned if owned is not None and len(owned) == 2 and all(owned.values()) else None


def group_owns(settings: Settings, group_id: str, topic: str) -> bool:
    """The group is stable and its members were assigned every partition of the topic."""
    owned = group_partitions(settings, group_id, topic)
    return owned is not None and sorted(p for ps in owned.values() for p in ps) == list(
        range(settings.partitions)
    )


def test_worker_killed_three_times_restarted_after_a_backlog_is_exact(ns: Settings, tmp_path: Path) -> None:
    """Each time the worker is killed, at least 15 s of event time is published before it restarts:
    it rebuilds partitions lazily as the backlog's fetches reach them, while security captures reopened
    by a rebuild cross into partitions already live (the case a staggered rebuild used to lose)."""
    settings = ns.model_copy(
        update={
            "partitions": 4,
            "worker_session_timeout_s": 6.0,
            "key_budget_lps": 1e6,
            "global_budget_lps": 1e7,
        }
    )
    work = incident_workload(
        sessions=120, lookback_s=settings.lookback_s, follow_s=settings.follow_s, span_s=55.0, seed=17
    )
    assert sum(i.kind == "security" for i in work.injected) >= 2
    t_first = work.lines[0]["timestamp"]
    rng = random.Random(9)
    # event seconds of the kills, each followed by 15 s of backlog, and new lines before the next one
    kills = [8 + rng.uniform(0, 1), 25 + rng.uniform(0, 1), 42 + rng.uniform(0, 1)]
    with pipeline_running(settings, tmp_path / "logs") as children:
        publisher = Publisher(settings)
        sent = 0

        def publish_until(until_s: float) -> None:
            nonlocal sent
            while sent < len(work.lines) and work.lines[sent]["timestamp"] - t_first < until_s * 1e6:
                publisher.publish(work.lines[sent])
                sent += 1
            assert publisher.flush(30) == 0

        def progress() -> int:
            return sessions_committed(settings)

        for n, at in enumerate(kills):
            # the kill must hit a worker at work: it owns every partition and commits what it reads
            eventually(
                lambda: group_owns(settings, settings.app_id, settings.sessions_topic) or None,
                90,
                f"worker {n + 1} owning every partition",
            )
            before = progress()
            publish_until(at)

            def advanced(since: int = before) -> bool | None:
                return progress() > since or None

            eventually(advanced, 60, f"worker {n + 1} committing progress")
            time.sleep(rng.uniform(0.0, 1.0))  # mid-batch, mid-commit or idle
            lag = sum(group_lag(settings, settings.app_id, settings.sessions_topic).values())
            print(f"kill {n + 1} at event {at:.0f} s: owns all partitions, committed {progress()}, lag {lag}")
            children[0].proc.send_signal(signal.SIGKILL)
            children[0].proc.wait(10)
            publish_until(at + 15)  # the backlog the next worker finds
            eventually(  # the backlog waits in logs.sessions, not in logs.raw
                lambda: (
                    sum(group_lag(settings, settings.ingest_group, settings.raw_topic).values()) == 0 or None
                ),
                60,
                f"ingest moving backlog {n + 1} to {settings.sessions_topic}",
            )
            children[0] = start_child(
                f"worker{n + 2}", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs"
            )
        publish_until(1e9)
        wait_for_every_line(settings, work, 150)
        wait_drained(settings, 120)  # anything extra has arrived once every stage committed all
        assert_stored_exactly(settings, work.expected)
