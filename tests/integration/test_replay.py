"""Replay on the real broker: exactly the lines of a range and filter, idempotent, retention refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from pipeline.errors import QueryError
from pipeline.kafka import ensure_topics
from pipeline.replay.run import ReplaySpec, replay
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.wire.curated import decode_curated
from tests.integration.helpers import consume_all

pytestmark = pytest.mark.integration
S = 1_000_000


def publish(settings: Settings, t0: int) -> list[dict[str, Any]]:
    """Sessions on two endpoints, one line per 10 s of event time over 10 minutes."""
    lines = []
    for i in range(60):
        lines.append(
            {
                "timestamp": t0 + i * 10 * S,
                "service": "shop" if i % 3 else "auth",
                "level": "DEBUG",
                "message": f"line {i}",
                "session_id": f"s{i % 4}",
                "user_id": f"u{i % 5}",
                "endpoint": "/pay" if i % 2 else "/cart",
            }
        )
    pub = Publisher(settings)
    for obj in lines:
        pub.publish_obj(obj)
    assert pub.flush(10) == 0
    return lines


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_replay_returns_exactly_the_range_and_filter_and_is_idempotent(ns: Settings, tmp_path: Path) -> None:
    ensure_topics(ns)
    t0 = time.time_ns() // 1000 - 15 * 60 * S
    lines = publish(ns, t0)
    spec = ReplaySpec(since_us=t0 + 100 * S, until_us=t0 + 400 * S, endpoint="/pay", reason="breach #7")
    expected = {
        x["message"]
        for x in lines
        if x["endpoint"] == "/pay" and t0 + 100 * S <= x["timestamp"] < t0 + 400 * S
    }
    first = replay(ns, spec, str(tmp_path / "a.jsonl"))
    rows = read_jsonl(tmp_path / "a.jsonl")
    assert {r["message"] for r in rows} == expected and first["matched_lines"] == len(expected) == 15
    assert all(r["tags"] == [spec.replay_id] and r["trigger_reasons"] == ["replay"] for r in rows)
    assert all(r["attributes"]["hindsight.replay.reason"] == "breach #7" for r in rows)
    # the file reads as `hindsight query --format jsonl` does: ISO time with its zone, and the microseconds
    assert all(r["timestamp"].endswith("+00:00") and isinstance(r["timestamp_us"], int) for r in rows)
    assert {r["timestamp_us"] for r in rows} == {x["timestamp"] for x in lines if x["message"] in expected}
    again = replay(ns, ReplaySpec(**{**spec.__dict__, "reason": "again"}), str(tmp_path / "b.jsonl.gz"))
    assert again["replay_id"] == first["replay_id"]
    import gzip

    rows_b = [orjson.loads(x) for x in gzip.decompress((tmp_path / "b.jsonl.gz").read_bytes()).splitlines()]
    for name in ("a.jsonl", "b.jsonl.gz"):  # log lines: this account's only, whatever the umask
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    key = lambda r: (r["raw_topic"], r["raw_partition"], r["raw_offset"], r["raw_index"])  # noqa: E731
    assert sorted(map(key, rows_b)) == sorted(map(key, rows))

    # into curated twice: the same raw ids and replay id, so the store (keyed on raw id) keeps one row each
    by_user = ReplaySpec(since_us=t0, until_us=t0 + 3600 * S, user="u2")
    replay(ns, by_user)
    replay(ns, by_user)
    got = [r for m in consume_all(ns, ns.curated_topic, 2, timeout=20) for r in decode_curated(m.value())]
    want = {x["message"] for x in lines if x["user_id"] == "u2"}
    assert len(got) == 2 * len(want) and {r["message"] for r in got} == want
    assert len({key(r) for r in got}) == len(want) and {r["trigger_id"] for r in got} == {by_user.replay_id}


def test_from_offsets_and_a_range_older_than_retention(ns: Settings, tmp_path: Path) -> None:
    ensure_topics(ns.model_copy(update={"partitions": 1}))
    ns = ns.model_copy(update={"partitions": 1})
    t0 = time.time_ns() // 1000 - 15 * 60 * S
    producer = Producer(ns.kafka_client_config())
    for i in range(10):  # one message per line, so offsets are line numbers
        obj = {
            "timestamp": t0 + i * S,
            "service": "s",
            "level": "INFO",
            "message": f"m{i}",
            "session_id": "x",
        }
        producer.produce(ns.raw_topic, value=orjson.dumps(obj), key=b"x")
        producer.flush(10)
        time.sleep(0.01)
    everything = ReplaySpec(since_us=t0, until_us=t0 + 60 * S, from_offsets=((0, 6),))
    replay(ns, everything, str(tmp_path / "o.jsonl"))
    assert [r["message"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["m6", "m7", "m8", "m9"]

    admin = AdminClient(ns.kafka_client_config())
    for future in admin.delete_records([TopicPartition(ns.raw_topic, 0, 5)]).values():
        future.result(10)
    with pytest.raises(QueryError, match="earliest time still available is"):
        replay(ns, ReplaySpec(since_us=t0 - 3600 * S, until_us=t0 + 60 * S), str(tmp_path / "r.jsonl"))
    now_us = time.time_ns() // 1000  # after every message left was written: within what Kafka holds
    recent = ReplaySpec(since_us=now_us, until_us=now_us + 60 * S)
    assert replay(ns, recent, str(tmp_path / "ok.jsonl"))["matched_lines"] == 0  # held, so not refused


def test_archive_keeps_raw_hourly_and_replay_reads_it_after_retention(ns: Settings, tmp_path: Path) -> None:
    import threading

    from pipeline.ops.services import run_archive

    settings = ns.model_copy(update={"archive_dir": tmp_path / "archive", "archive_batch_s": 0.5})
    ensure_topics(settings)
    t0 = (time.time_ns() // 1000 - 3 * 3600 * S) // (3600 * S) * (3600 * S) + 1800 * S  # half past, 3 h ago
    lines = [
        {
            "timestamp": t0 + i * 60 * S,
            "service": "shop",
            "level": "DEBUG",
            "message": f"a{i}",
            "session_id": f"s{i % 3}",
            "endpoint": "/pay" if i % 2 else "/cart",
        }
        for i in range(60)  # one hour: two hour folders
    ]
    pub = Publisher(settings)
    for obj in lines:
        pub.publish_obj(obj)
    assert pub.flush(10) == 0
    stop = threading.Event()
    thread = threading.Thread(target=run_archive, args=(settings, stop), daemon=True)
    thread.start()
    try:
        root = tmp_path / "archive" / settings.raw_topic

        def archived() -> int | None:
            n = sum(1 for _ in root.rglob("*.avro"))
            from pipeline.replay.archive import read_archive

            count = (
                sum(1 for _ in read_archive(root.parent, settings.raw_topic, t0, t0 + 3600 * S)) if n else 0
            )
            return count if count == 60 else None

        from tests.integration.helpers import eventually

        eventually(archived, 30, "60 archived lines")
    finally:
        stop.set()
        thread.join(15)
    assert len({p.parent.name for p in root.rglob("*.avro")}) == 2  # two hours
    admin = AdminClient(settings.kafka_client_config())
    parts = [TopicPartition(settings.raw_topic, p, -1) for p in range(settings.partitions)]
    for future in admin.delete_records(parts).values():
        future.result(10)
    spec = ReplaySpec(since_us=t0, until_us=t0 + 3600 * S, endpoint="/pay")
    result = replay(settings, spec, str(tmp_path / "old.jsonl"))
    assert result["from_archive"] is True
    got = read_jsonl(tmp_path / "old.jsonl")
    assert sorted(r["message"] for r in got) == sorted(f"a{i}" for i in range(60) if i % 2)
    assert all(r["raw_topic"] == settings.raw_topic and r["tags"] == [spec.replay_id] for r in got)
    no_archive = settings.model_copy(update={"archive_dir": tmp_path / "nothing"})
    with pytest.raises(QueryError, match="earliest time still available"):
        replay(no_archive, spec, str(tmp_path / "x.jsonl"))


def test_lines_without_a_time_keep_one_row_through_three_replays(ns: Settings, tmp_path: Path) -> None:
    """kcat-like lines with no timestamp, one per message and keyed by pod, are stored by the pipeline;
    replaying their period into curated three times adds no row: every path gives a line the Kafka
    record's time, so one raw line id is one row of the store."""
    from pipeline.store.client import query_api, remote_sql, remote_summary
    from tests.integration.helpers import eventually, pipeline_running, wait_drained

    settings = ns.model_copy(update={"key_budget_lps": 1e6, "global_budget_lps": 1e7})
    producer = Producer(settings.kafka_client_config())
    pods = ["pod-a", "pod-b", "pod-c"]
    lines = [
        {
            "service": "shop",
            "level": "ERROR" if i == 20 else "DEBUG",
            "message": f"untimed {i}",
            "session_id": "k1",
        }
        for i in range(30)
    ]
    with pipeline_running(settings, tmp_path / "logs"):
        start_us = time.time_ns() // 1000 - S
        for i, obj in enumerate(lines):
            producer.produce(settings.raw_topic, orjson.dumps(obj), pods[i % 3].encode())
            time.sleep(0.01)  # record times apart
        assert producer.flush(10) == 0
        api = query_api(settings)
        eventually(
            lambda: remote_summary(api)["lines"] >= 30 or None, 90, "the session kept around its ERROR"
        )
        table = f"{settings.clickhouse_database}.logs"

        def identity() -> dict[str, int]:
            [row] = remote_sql(
                api,
                f"SELECT count() AS rows, uniqExact(RawTopic, RawPartition, RawOffset, RawIndex) AS ids, "
                f"countIf(has(TriggerReasons, 'replay')) AS replayed, "
                f"countIf(has(TriggerReasons, 'error')) AS by_error FROM {table} FINAL",
                10,
            )
            return {k: int(v) for k, v in row.items()}

        before = identity()
        assert before["rows"] == before["ids"] == 30
        spec = ReplaySpec(
            since_us=start_us, until_us=time.time_ns() // 1000 + S, session="k1", reason="audit"
        )
        for _ in range(3):
            assert replay(settings, spec)["matched_lines"] == 30
        eventually(lambda: identity()["replayed"] > 0 or None, 60, "the replayed lines in the store")
        wait_drained(settings, 60)  # the sink's last batches are in once every stage committed all
        after = identity()
    assert after["rows"] == after["ids"] == 30, after
    # the history stays: lines the ERROR kept still say so beside the replay's reason
    assert after["by_error"] == before["by_error"] > 0 and after["replayed"] == 30, (before, after)
