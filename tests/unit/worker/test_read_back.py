"""read_back reaches the offset it was asked for: an empty poll (slow broker, leader move) is retried,
and a partition that never gets there fails loudly instead of rebuilding a partial state. The consumer
is scripted here to produce those moments on demand; tests/reliability reads back from a real broker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

import pipeline.worker.rebuild as rebuild
from pipeline.settings import Settings


class Msg:
    def __init__(self, offset: int, error: KafkaError | None = None) -> None:
        self._offset, self._error = offset, error

    def error(self) -> KafkaError | None:
        return self._error

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"v%d" % self._offset


class ScriptedConsumer:
    """Answers consume() from a script of polls: each a list of offsets, None for an empty poll, or
    "eof@N" for the end-of-partition event at N."""

    script: list[Any] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.polls = list(self.script)

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[Any]:
        return [type("TP", (), {"offset": 10})()]

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, 100

    def assign(self, tps: list[Any]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Msg]:
        if not self.polls:
            return []
        poll = self.polls.pop(0)
        if poll is None:
            return []
        if isinstance(poll, str):
            return [Msg(int(poll.split("@")[1]), KafkaError(KafkaError._PARTITION_EOF))]
        return [Msg(o) for o in poll][:n]

    def close(self) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedConsumer]:
    monkeypatch.setattr(rebuild, "Consumer", ScriptedConsumer)
    return ScriptedConsumer


def test_empty_polls_are_retried_until_the_offset_is_reached(scripted: type[ScriptedConsumer]) -> None:
    scripted.script = [None, [10, 11, 12], None, None, [13, 14], [15, 16]]
    got = rebuild.read_back(Settings(), "logs.sessions", 0, 15, 1_000_000, timeout_s=30)
    assert [o for o, _ in got] == [10, 11, 12, 13, 14]  # up to, not including, 15


def test_end_of_partition_past_the_offset_ends_the_read(scripted: type[ScriptedConsumer]) -> None:
    scripted.script = [[10, 11], "eof@14"]  # 12 and 13 were transaction markers: no messages there
    got = rebuild.read_back(Settings(), "logs.sessions", 0, 14, 1_000_000, timeout_s=30)
    assert [o for o, _ in got] == [10, 11]


def test_a_partition_that_never_reaches_the_offset_fails_loudly(scripted: type[ScriptedConsumer]) -> None:
    scripted.script = [[10, 11], "eof@12"]  # the broker says 12 is the end, but 12..19 must exist
    with pytest.raises(rebuild.RebuildError, match=r"reached offset 12 of 20"):
        rebuild.read_back(Settings(), "logs.sessions", 0, 20, 1_000_000, timeout_s=0.2)
