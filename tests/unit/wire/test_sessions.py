"""logs.sessions: lines written by ingest's fast path (the raw value with its origin in front), and the
frame that carries the engine's columns beside them."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import orjson
import pytest

from pipeline.errors import DecodeError
from pipeline.wire.sessions import (
    FramedLine,
    decode_framed,
    decode_sessions,
    encode_framed,
    is_framed,
    join_lines,
    with_origin,
)

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


def _framed_line(key: str, ts: int, offset: int, **fields: object) -> FramedLine:
    rec = {"timestamp": ts, "service": "svc", "level": "INFO", "message": f"m{offset}", **fields}
    line = with_origin(orjson.dumps(rec), "logs.raw", 0, offset, None, "0123456789abcdef")
    return (key, ts, str(rec["level"]), "svc", fields.get("endpoint"), fields.get("user_id"),  # type: ignore[return-value]
            fields.get("latency_ms"), fields.get("status_code"), 0, "0123456789abcdef",
            len(str(rec["message"])), 0, offset, 0, line)  # fmt: skip


def test_a_frame_carries_the_columns_of_its_lines_grouped_by_session() -> None:
    lines = [
        _framed_line("a", T0, 1, endpoint="/x", latency_ms=5.0),
        _framed_line("b", T0 + 1, 2, level="ERROR", user_id="u", status_code=504),
        _framed_line("a", T0 + 2, 3, endpoint="/y"),
    ]
    value = encode_framed(lines, "timeout")
    assert is_framed(value) and not is_framed(join_lines([lines[0][-1]]))
    framed = decode_framed(value)
    cols = framed.columns
    assert (cols.keys, cols.counts) == (["a", "b"], [2, 1])  # a's lines first, in order
    assert cols.timestamp == [T0, T0 + 2, T0 + 1] and framed.raw_offset == [1, 3, 2]
    assert cols.level == ["INFO", "INFO", "ERROR"] and cols.endpoint == ["/x", "/y", None]
    assert cols.user_id == [None, None, "u"] and cols.status_code == [None, None, 504]
    assert cols.latency_ms == [5.0, None, None] and cols.size == [2, 2, 2]
    assert cols.template_id == ["0123456789abcdef"] * 3 and cols.timeout_attribute == "timeout"
    # each line's end in the body: the body is the unframed value, and each slice is one line
    body = cols.body
    assert body is not None and cols.ends is not None
    starts = [1] + [e + 1 for e in cols.ends[:-1]]
    assert [body[s:e] for s, e in zip(starts, cols.ends, strict=True)] == [
        lines[0][-1], lines[2][-1], lines[1][-1]
    ]  # fmt: skip
    # readers of lines see the same lines framed or not
    assert decode_sessions(value) == decode_sessions(body)
    assert [r["raw_offset"] for r in decode_sessions(value)] == [1, 3, 2]


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v[:12],  # the header cut short
        lambda v: v[:-1],  # the body's last byte missing: the ends no longer fit
        lambda v: v + b" ",  # a byte more
        lambda v: v[:4] + b"\x7f" + v[5:],  # a header length far beyond the value
    ],
)
def test_a_frame_that_does_not_fit_its_lines_is_refused(damage: Callable[[bytes], bytes]) -> None:
    value = encode_framed([_framed_line("a", T0, 1), _framed_line("a", T0 + 1, 2)], "timeout")
    with pytest.raises(DecodeError) as info:
        decode_framed(damage(value))
    assert info.value.error_type == "bad_sessions"


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        (1, [1], "do not fit"),  # counts: one line short of the columns
        (5, [0, 9], "out of range"),  # a service index beyond the strings
        (16, [3, 2], "do not fit"),  # ends going backwards
        (4, [2, 9], "not a logs.sessions frame"),  # a level index beyond FATAL
    ],
)
def test_a_frame_whose_header_contradicts_itself_is_refused(field: int, value: object, why: str) -> None:
    framed = encode_framed([_framed_line("a", T0, 1), _framed_line("a", T0 + 1, 2)], "timeout")
    size = int.from_bytes(framed[4:8], "big")
    header = msgspec.msgpack.decode(framed[8 : 8 + size])
    header[field] = value
    head = msgspec.msgpack.encode(header)
    with pytest.raises(DecodeError, match=why):
        decode_framed(framed[:4] + len(head).to_bytes(4, "big") + head + framed[8 + size :])
