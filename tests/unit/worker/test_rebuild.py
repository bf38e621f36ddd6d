"""A restart with a backlog, in-process (no Kafka): partitions are rebuilt lazily, in the order their
first messages come, and a capture a rebuild reopens (a security flag) crosses into partitions that are
already live. Old owner's output plus new owner's output must be exactly the ground truth."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import orjson
import pytest

from pipeline.ops.workload import Workload, incident_workload
from pipeline.settings import Settings
from pipeline.wire.sessions import encode_sessions
from pipeline.worker.processor import Outcome, RawProcessor

PARTITIONS = 4


@dataclass
class Message:
    partition: int
    offset: int
    timestamp: int
    value: bytes


def published(topic: str) -> tuple[list[Message], set[tuple[str, str, int]]]:
    """One line per message keyed by session over four partitions, in time order: as kcat writes
    logs.raw, or as canonical lines of logs.sessions (which the worker buffers encoded)."""
    work = incident_workload(sessions=90, seed=8)
    offsets = [0] * PARTITIONS
    messages = []
    for rec in sorted(work.lines, key=lambda r: r["timestamp"]):
        partition = zlib.crc32(str(rec["session_id"]).encode()) % PARTITIONS
        offset = offsets[partition]
        if topic == "logs.sessions":
            origin = {
                "raw_topic": "logs.raw",
                "raw_partition": partition,
                "raw_offset": offset,
                "raw_index": 0,
            }
            value = encode_sessions([{**rec, **origin}])
        else:
            value = orjson.dumps(rec)
        messages.append(Message(partition, offset, rec["timestamp"], value))
        offsets[partition] += 1
    assert any(i.kind == "security" for i in work.injected)
    return messages, work.expected


def settings() -> Settings:
    return Settings(key_budget_lps=10**6, global_budget_lps=10**7)


def collect(got: set[tuple[str, str, int]], outcome: Outcome) -> None:
    for rows in outcome.curated.values():
        got.update(Workload.key(r) for r in rows)  # the store keeps one row per raw line


def restart(
    topic: str, messages: list[Message], kill_at: int, first: set[int], live_s: float
) -> set[tuple[str, str, int]]:
    """The old owner handles messages[:kill_at] (and committed them), then dies. The new owner is assigned
    every partition, but the fetches bring `first`'s backlog before the others' first message: it rebuilds
    `first`, handles their backlog for `live_s` of event time, then rebuilds the rest and catches up."""
    got: set[tuple[str, str, int]] = set()
    old = RawProcessor(settings())
    for m in messages[:kill_at]:
        collect(got, old.handle(topic, m.partition, m.offset, m.value))
    done, backlog = messages[:kill_at], messages[kill_at:]
    new = RawProcessor(settings())

    def rebuild(partitions: set[int]) -> None:
        for p in sorted(partitions):
            past = [(m.offset, m.value) for m in done if m.partition == p]
            collect(got, new.rebuild(topic, p, past))

    rebuild(first)
    until = backlog[0].timestamp + int(live_s * 1e6) if backlog else 0
    early = [m for m in backlog if m.partition in first and m.timestamp <= until]
    for m in early:
        collect(got, new.handle(topic, m.partition, m.offset, m.value))
    rebuild(set(range(PARTITIONS)) - first)
    for m in backlog:
        if m not in early:
            collect(got, new.handle(topic, m.partition, m.offset, m.value))
    return got


TOPICS = ["logs.raw", "logs.sessions"]


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("kill_share", [0.35, 0.5, 0.65])
@pytest.mark.parametrize("first", [{0, 1}, {2, 3}, {0, 2}, {1, 3}, {3}, {0, 1, 2}])
def test_staggered_rebuild_after_a_kill_is_exact(topic: str, kill_share: float, first: set[int]) -> None:
    messages, expected = published(topic)
    assert restart(topic, messages, int(len(messages) * kill_share), first, live_s=15) == expected


@pytest.mark.parametrize("topic", TOPICS)
def test_without_a_restart_the_same_messages_are_exact(topic: str) -> None:
    messages, expected = published(topic)
    got: set[tuple[str, str, int]] = set()
    proc = RawProcessor(settings())
    for m in messages:
        collect(got, proc.handle(topic, m.partition, m.offset, m.value))
    assert got == expected
