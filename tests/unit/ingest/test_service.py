"""The ingest process's loop without a broker: one batch in flight, its offsets committed only after
all it produced is acknowledged, and after a failed delivery every line read since comes again."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from pipeline.ingest.service import Ingest
from pipeline.ingest.stage import IngestStage
from pipeline.settings import Settings
from pipeline.wire.raw import RawDecoder
from pipeline.wire.sessions import decode_sessions

T_MS = 1_764_496_800_000


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "logs.raw"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return 1, T_MS

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"pod-1"


class FakeConsumer:
    """Hands out the messages of each raw partition from its position, `per_poll` at a time."""

    def __init__(self, log: dict[int, list[FakeMessage]], per_poll: int, on_poll: Callable[[], None]) -> None:
        self.log, self.per_poll, self.on_poll = log, per_poll, on_poll
        self.position = dict.fromkeys(log, 0)
        self.commits: list[dict[int, int]] = []
        self.seeks: list[tuple[int, int]] = []
        self.on_revoke: Callable[[Any, list[TopicPartition]], None] | None = None
        self.revoke_after_collecting: int | None = None  # a partition revoked once a poll is collected

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        self.on_poll()
        out = []
        for part, messages in self.log.items():
            got = messages[self.position[part] : self.position[part] + self.per_poll]
            self.position[part] += len(got)
            out.extend(got)
        if self.revoke_after_collecting is not None:
            # librdkafka serves the rebalance inside consume(), after it may have collected messages
            # of the partition it revokes
            self.revoke(self.revoke_after_collecting)
            self.revoke_after_collecting = None
        return out

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.position[tp.partition] = tp.offset

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def subscribe(self, topics: list[str], on_revoke: Any) -> None:
        self.on_revoke = on_revoke

    def revoke(self, part: int) -> None:
        """A rebalance moves `part` to another member: the callback runs inside consume(), and the
        partition is no longer read."""
        assert self.on_revoke is not None
        self.on_revoke(self, [TopicPartition("logs.raw", part)])
        del self.log[part]

    def close(self) -> None:
        pass


class FakeProducer:
    """Delivers on flush(); fails the deliveries of the produce calls whose numbers are in `fail`."""

    def __init__(self, delivered: Callable[[KafkaError | None, Any], None], fail: set[int]) -> None:
        self.delivered, self.fail = delivered, fail
        self.pending: list[tuple[int, bytes]] = []
        self.sent: list[bytes] = []
        self.calls = 0
        self.flushes_with_pending = 0

    def produce(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        self.calls += 1
        self.pending.append((self.calls, value))

    def flush(self, timeout: float) -> int:
        self.flushes_with_pending += bool(self.pending)
        for call, value in self.pending:
            if call in self.fail:
                self.delivered(KafkaError(KafkaError._MSG_TIMED_OUT), None)
            else:
                self.sent.append(value)
        self.pending.clear()
        return 0

    def __len__(self) -> int:
        return len(self.pending)


def _ingest(log: dict[int, list[FakeMessage]], per_poll: int, fail: set[int], polls: int) -> Ingest:
    ingest = Ingest.__new__(Ingest)
    settings = Settings().model_copy(update={"ingest_batch": 100})
    ingest.settings = settings
    ingest.stage = IngestStage(RawDecoder(1 << 20), partitions=2, max_lines_per_message=1000)
    ingest.failed, ingest._error = 0, None
    ingest.stopping = threading.Event()
    seen = [0]

    def on_poll() -> None:
        seen[0] += 1
        if seen[0] > polls:
            ingest.stop()

    ingest.consumer = FakeConsumer(log, per_poll, on_poll)  # type: ignore[assignment]
    ingest.producer = FakeProducer(ingest._delivered, fail)  # type: ignore[assignment]
    return ingest


def _line(p: int, o: int) -> bytes:
    line = {"service": "a", "level": "INFO", "message": f"m{p}.{o}", "session_id": f"s{p}.{o % 3}"}
    return orjson.dumps(line)


def _log(parts: int, per_part: int) -> dict[int, list[FakeMessage]]:
    return {p: [FakeMessage(p, o, _line(p, o)) for o in range(per_part)] for p in range(parts)}


def _messages(values: list[bytes]) -> list[str]:
    return [str(rec["message"]) for value in values for rec in decode_sessions(value)]


def test_a_batch_is_committed_only_after_it_is_acknowledged_and_the_next_poll_is_routed_meanwhile() -> None:
    ingest = _ingest(_log(2, 6), per_poll=2, fail=set(), polls=4)
    ingest.run()
    consumer, producer = ingest.consumer, ingest.producer
    assert isinstance(consumer, FakeConsumer) and isinstance(producer, FakeProducer)
    # each commit is of a whole poll, in order, and the last one is made when stopping
    assert consumer.commits == [{0: 2, 1: 2}, {0: 4, 1: 4}, {0: 6, 1: 6}]
    assert sorted(_messages(producer.sent)) == sorted(f"m{p}.{o}" for p in range(2) for o in range(6))
    assert consumer.seeks == []


def test_after_a_failed_delivery_everything_read_since_comes_again_and_nothing_is_lost() -> None:
    log = _log(2, 6)
    # partition 1 starts late: the poll routed while the first batch is in flight has a partition
    # the first batch did not, and it must go back too (it was never produced)
    late = log[1]
    log[1] = []
    ingest = _ingest(log, per_poll=2, fail={1}, polls=6)
    consumer = ingest.consumer
    assert isinstance(consumer, FakeConsumer)
    real_poll = consumer.on_poll

    def on_poll() -> None:
        real_poll()
        if len(log[1]) == 0 and consumer.position[0] >= 2:
            log[1].extend(late)

    consumer.on_poll = on_poll
    ingest.run()
    producer = ingest.producer
    assert isinstance(producer, FakeProducer)
    # the first batch (partition 0, offsets 0-1) failed: partition 0 goes back to 0, and partition 1,
    # only in the poll routed meanwhile (never produced), back to where that poll began
    assert consumer.seeks == [(0, 0), (1, 0)]
    # nothing was committed for the failed batch; from then on both partitions are read from 0 again
    assert consumer.commits == [{0: 2, 1: 2}, {0: 4, 1: 4}, {0: 6, 1: 6}]
    stored = _messages(producer.sent)
    # the failed batch was never delivered, and the unsent poll never produced: each line once
    assert sorted(stored) == sorted(f"m{p}.{o}" for p in range(2) for o in range(6))


def _revoking(
    log: dict[int, list[FakeMessage]], fail: set[int], after_collecting: bool = False
) -> tuple[Ingest, FakeConsumer, list[object]]:
    """An ingest whose raw partition 1 moves to another member in its second poll, while the first
    poll is in flight (before that poll collects messages, or after); what was committed when the
    callback returned is noted."""
    ingest = _ingest(log, per_poll=2, fail=fail, polls=6)
    consumer = ingest.consumer
    assert isinstance(consumer, FakeConsumer)
    at_revoke: list[object] = []
    real_poll, polls = consumer.on_poll, [0]

    def on_poll() -> None:
        real_poll()
        polls[0] += 1
        if polls[0] == 2 and after_collecting:
            consumer.revoke_after_collecting = 1
            real_revoke = consumer.revoke

            def revoke(part: int) -> None:
                real_revoke(part)
                at_revoke.extend(consumer.commits)

            consumer.revoke = revoke  # type: ignore[method-assign]
        elif polls[0] == 2:
            consumer.revoke(1)
            at_revoke.extend(consumer.commits)

    consumer.on_poll = on_poll
    return ingest, consumer, at_revoke


def _new_owner(log: dict[int, list[FakeMessage]], part: int, commits: list[dict[int, int]]) -> list[str]:
    """What the partition's next owner reads: from its last committed offset on."""
    start = max((c[part] for c in commits if part in c), default=0)
    return [str(orjson.loads(m.value())["message"]) for m in log[part][start:]]


def test_a_revoked_partition_is_committed_in_the_callback_and_its_next_owner_repeats_nothing() -> None:
    log = _log(2, 6)
    moved = list(log[1])
    ingest, consumer, at_revoke = _revoking(log, fail=set())
    ingest.run()
    producer = ingest.producer
    assert isinstance(producer, FakeProducer)
    # the in-flight poll (offsets 0-1 of both) was delivered and its partition 1 committed while still
    # ours; the loop then commits only partition 0, and seeks nothing
    assert at_revoke == [{1: 2}]
    assert consumer.commits == [{1: 2}, {0: 2}, {0: 4}, {0: 6}]
    assert consumer.seeks == []
    ours = _messages(producer.sent)
    theirs = _new_owner({1: moved}, 1, consumer.commits)
    # each line once, between the two owners
    assert sorted(ours + theirs) == sorted(f"m{p}.{o}" for p in range(2) for o in range(6))


def test_a_revoked_partition_whose_poll_failed_is_left_to_its_next_owner_uncommitted() -> None:
    log = _log(2, 6)
    moved = list(log[1])
    ingest, consumer, at_revoke = _revoking(log, fail={1})
    ingest.run()
    producer = ingest.producer
    assert isinstance(producer, FakeProducer)
    # not all of the in-flight poll was delivered: partition 1 is not committed, not committed later
    # by the loop, and not sought (it is no longer assigned); partition 0 goes back to its start
    assert at_revoke == []
    assert all(1 not in c for c in consumer.commits)
    assert consumer.seeks == [(0, 0)]
    ours = _messages(producer.sent)
    theirs = _new_owner({1: moved}, 1, consumer.commits)
    assert theirs == [f"m1.{o}" for o in range(6)]  # the next owner starts from the last commit: 0
    # nothing lost (lines of the poll's other canonical messages come twice; the worker drops repeats)
    assert set(ours + theirs) == {f"m{p}.{o}" for p in range(2) for o in range(6)}


def test_a_partitions_messages_collected_before_its_revocation_are_left_to_its_next_owner() -> None:
    log = _log(2, 6)
    moved = list(log[1])
    ingest, consumer, at_revoke = _revoking(log, fail=set(), after_collecting=True)
    ingest.run()
    producer = ingest.producer
    assert isinstance(producer, FakeProducer)
    # the second poll held offsets 2-3 of partition 1 when the partition moved: they are not produced
    # (the next owner starts at 2, committed in the callback) and not committed by the loop
    assert at_revoke == [{1: 2}]
    assert consumer.commits == [{1: 2}, {0: 2}, {0: 4}, {0: 6}]
    ours = _messages(producer.sent)
    assert "m1.2" not in ours and "m1.3" not in ours
    theirs = _new_owner({1: moved}, 1, consumer.commits)
    assert sorted(ours + theirs) == sorted(f"m{p}.{o}" for p in range(2) for o in range(6))
