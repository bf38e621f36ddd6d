"""logs.sessions unframed (what an older ingest wrote, and what the worker reads when it drops repeats):
a JSON array of canonical records with their origin written into each."""

from __future__ import annotations

import orjson
import pytest

from pipeline.errors import DecodeError
from pipeline.wire.sessions import decode_sessions, encode_sessions, split_sessions

T0 = 1_790_000_000_000_000


def test_unframed_lines_keep_their_origin_and_template() -> None:
    lines = [
        {"timestamp": T0 + i, "service": "svc", "level": "INFO", "message": f'say "{i}"', "raw_topic": topic,
         "raw_partition": 3, "raw_offset": 7 + i, "raw_index": 0, "template_id": "0123456789abcdef"}
        for i, topic in enumerate(("logs.raw", 'odd "topic"'))
    ]  # fmt: skip
    value = encode_sessions(lines)
    got = decode_sessions(value)
    assert [(r["raw_topic"], r["raw_offset"], r["template_id"], r["severity_number"]) for r in got] == [
        ("logs.raw", 7, "0123456789abcdef", 9),
        ('odd "topic"', 8, "0123456789abcdef", 9),
    ]
    assert [orjson.loads(line) for line in split_sessions(value)] == lines


@pytest.mark.parametrize(
    "value",
    [b"not json", orjson.dumps([{"timestamp": T0, "service": "s", "level": "INFO", "message": "no origin"}])],
)
def test_a_value_that_is_not_a_batch_of_lines_is_refused(value: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_sessions(value)
    assert info.value.error_type == "bad_sessions"
