"""logs.sessions lines written by ingest's fast path: the raw value with its origin in front."""

from __future__ import annotations

import orjson
import pytest

from pipeline.wire.sessions import decode_sessions, join_lines, with_origin

T0 = 1_790_000_000_000_000
RAW = orjson.dumps({"timestamp": T0, "service": "svc", "level": "INFO", "message": 'say "hi"'})


@pytest.mark.parametrize("observed", [None, T0 + 5])
@pytest.mark.parametrize("template", [None, "0123456789abcdef"])
def test_origin_template_and_observed_time_written_in_front(
    observed: int | None, template: str | None
) -> None:
    lines = [with_origin(RAW, topic, 3, offset, observed, template) for topic, offset in
             (("logs.raw", 7), ("logs.raw", 8), ('odd "topic"', 7))]  # fmt: skip
    got = decode_sessions(join_lines(lines))
    assert [(r["raw_topic"], r["raw_partition"], r["raw_offset"], r["raw_index"]) for r in got] == [
        ("logs.raw", 3, 7, 0),
        ("logs.raw", 3, 8, 0),
        ('odd "topic"', 3, 7, 0),
    ]
    for rec in got:
        assert rec["message"] == 'say "hi"' and rec["timestamp"] == T0
        assert rec["observed_timestamp"] == observed
        assert rec["template_id"] == template
