"""The framed logs.sessions value: the engine's columns and the lines' origins in a header, the lines
as they came behind it; a header that does not fit its lines is refused."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType

import msgspec
import orjson
import pytest

from pipeline import compiled
from pipeline.errors import DecodeError
from pipeline.wire.frames import (
    FRAME,
    LEVEL_INDEX,
    LEVELS,
    FramedLine,
    _encode_framed_py,
    decode_framed,
    encode_framed,
    framed_records,
    is_framed,
    unframed,
)
from pipeline.wire.sessions import decode_sessions
from tests.conftest import unavailable

T0 = 1_790_000_000_000_000
TID = "0123456789abcdef"


def _framed_line(key: str, ts: int, offset: int, topic: str = "logs.raw", observed: int | None = None,
                 **fields: object) -> FramedLine:  # fmt: skip
    rec = {"timestamp": ts, "service": "svc", "level": "INFO", "message": f'say "{offset}"', **fields}
    return (key, ts, str(rec["level"]), "svc", fields.get("endpoint"), fields.get("user_id"),  # type: ignore[return-value]
            fields.get("latency_ms"), fields.get("status_code"), 0, TID, len(str(rec["message"])), topic, 3,
            offset, 0, observed, orjson.dumps(rec))  # fmt: skip


def test_a_frame_carries_the_columns_of_its_lines_grouped_by_session() -> None:
    lines = [
        _framed_line("a", T0, 1, endpoint="/x", latency_ms=5.0),
        _framed_line("b", T0 + 1, 2, level="ERROR", user_id="u", status_code=504),
        _framed_line("a", T0 + 2, 3, endpoint="/y"),
    ]
    value = encode_framed(lines, "timeout")
    assert is_framed(value) and not is_framed(lines[0][-1])
    framed = decode_framed(value)
    cols = framed.columns
    assert (cols.keys, cols.counts) == (["a", "b"], [2, 1])  # a's lines first, in order
    assert cols.timestamp == [T0, T0 + 2, T0 + 1] and framed.origins.raw_offset == [1, 3, 2]
    assert cols.level == ["INFO", "INFO", "ERROR"] and cols.endpoint == ["/x", "/y", None]
    assert cols.user_id == [None, None, "u"] and cols.status_code == [None, None, 504]
    assert cols.latency_ms == [5.0, None, None] and cols.size == [7, 7, 7]
    assert cols.template_id == [TID] * 3 and cols.timeout_attribute == "timeout"
    # each line's end in the body, and each slice is the line as it came
    body = cols.body
    assert body is not None and cols.ends is not None
    starts = [1] + [e + 1 for e in cols.ends[:-1]]
    assert [body[s:e] for s, e in zip(starts, cols.ends, strict=True)] == [
        lines[0][-1], lines[2][-1], lines[1][-1]
    ]  # fmt: skip


def test_many_sessions_are_grouped_in_order_of_their_first_line_each_in_the_order_it_came() -> None:
    keys = ["c", "a", "c", "b", "a", "a", "d", "c", "b", "a"]
    lines = [_framed_line(k, T0 + i // 2, i) for i, k in enumerate(keys)]  # ties in time: kept in order
    cols = decode_framed(encode_framed(lines, "timeout")).columns
    assert (cols.keys, cols.counts) == (["c", "a", "b", "d"], [3, 4, 2, 1])
    assert cols.origins is not None and cols.origins.raw_offset == [0, 2, 7, 1, 4, 5, 9, 3, 8, 6]
    one = decode_framed(encode_framed(lines[:1], "timeout")).columns
    assert (one.keys, one.counts, one.origins and one.origins.raw_offset) == (["c"], [1], [0])


@pytest.mark.parametrize("observed", [None, T0 + 5])
def test_a_lines_record_is_its_own_fields_and_what_the_header_says(observed: int | None) -> None:
    lines = [
        _framed_line("a", T0, 7, observed=observed),
        _framed_line("a", T0 + 1, 8, 'odd "topic"', observed),
    ]
    value = encode_framed(lines, "timeout")
    got = decode_sessions(value)
    assert got == framed_records(value)
    assert [(r["raw_topic"], r["raw_partition"], r["raw_offset"], r["raw_index"]) for r in got] == [
        ("logs.raw", 3, 7, 0),
        ('odd "topic"', 3, 8, 0),
    ]
    for rec in got:
        assert rec["message"].startswith("say ") and rec["template_id"] == TID
        assert rec["observed_timestamp"] == observed and rec["severity_number"] == 9
    # unframed, the same records (each with its origin written in), in the same order
    assert decode_sessions(unframed(value)) == got


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
        (13, [0, 9], "out of range"),  # a raw topic index beyond the strings
        (18, [3, 2], "do not fit"),  # ends going backwards
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


def test_the_engine_buffers_each_sessions_lines_of_a_frame_as_one_slice_with_their_records() -> None:
    from pipeline.engine.buffers import COMPACT_OVERHEAD
    from pipeline.engine.hindsight import Hindsight
    from pipeline.engine.model import WindowConfig

    # three sessions, the middle one's lines neither first nor last in the body
    lines = [_framed_line(key, T0 + i, i, observed=T0 + 9 if i == 4 else None)
             for i, key in enumerate("abcbabcc")]  # fmt: skip
    value = encode_framed(lines, "timeout")
    expected = framed_records(value)
    windows = Hindsight(WindowConfig())
    windows.process_columns("logs.sessions", 0, 7, decode_framed(value).columns)
    sessions = windows.engine("logs.sessions", 0).sessions
    assert list(sessions) == ["a", "b", "c"]
    seen = []
    for st in sessions.values():
        (chunk,) = st.buf
        assert chunk.recs is None and chunk.blob is not None  # sealed: one slice, no object per line
        for pos in range(chunk.count):
            rec = chunk.rec(pos)
            seen.append(rec)
            assert chunk.size(pos) == len(lines[rec["raw_offset"]][-1]) + COMPACT_OVERHEAD
    assert [r["raw_offset"] for r in seen] == [0, 4, 1, 3, 5, 2, 6, 7]
    assert seen == expected  # each line with its own origin and observed time
    assert seen[1]["observed_timestamp"] == T0 + 9 and seen[0]["observed_timestamp"] is None


# --- the C encoder (pipeline/wire/_frames.c) writes the same bytes as the Python form ---

_FRAMES_C = compiled.built("pipeline.wire._frames")  # also under HINDSIGHT_NATIVE=0


@pytest.fixture
def frames_c() -> ModuleType:
    if _FRAMES_C is None:
        unavailable("the C frame encoder is not built here (make native builds it)")
    assert _FRAMES_C is not None
    return _FRAMES_C


_INTS = [0, 1, 31, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]
_TEXTS = ["", "a", "é" * 15, "x" * 31, "x" * 32, "y" * 255, "y" * 256, "z" * 65535, "z" * 65536, "日本"]


def _random_lines(rng: random.Random, n: int, sessions: int) -> list[FramedLine]:
    """Lines with every msgpack form the header may need: each integer width, floats, None, strings
    of each length class, many sessions (more than 15 and 65535 array items are other headers)."""
    out: list[FramedLine] = []
    for i in range(n):
        latency = rng.choice([None, 0.0, -1.5, 1e300, float(rng.randint(0, 9999)) / 7])
        status = rng.choice([None, 0, 200, -1, -33, -129, -32769, -(2**31) - 1, -(2**63), 2**63 - 1])
        out.append((
            f"s{rng.randrange(sessions)}", rng.choice(_INTS), rng.choice(LEVELS), rng.choice(_TEXTS[1:]),
            rng.choice([None, *_TEXTS]), rng.choice([None, "u1", "u2"]), latency, status,
            rng.randrange(4), rng.choice(["0123456789abcdef", "fedcba9876543210"]), rng.choice(_INTS),
            rng.choice(["logs.raw", "logs.raw.b"]), rng.randrange(64), rng.choice(_INTS), rng.randrange(300),
            rng.choice([None, *_INTS]), b'{"n":%d}' % i,
        ))  # fmt: skip
    return out


@pytest.mark.parametrize(("seed", "n", "sessions"), [(1, 1, 1), (2, 10, 3), (3, 500, 40), (4, 70_000, 5)])
def test_the_c_encoder_writes_the_same_bytes_as_the_python_form(
    frames_c: ModuleType, seed: int, n: int, sessions: int
) -> None:
    lines = _random_lines(random.Random(seed), n, sessions)
    native = frames_c.encode_framed(lines, "timeout", FRAME, LEVEL_INDEX)
    assert native == _encode_framed_py(lines, "timeout")
    assert encode_framed(lines, "timeout") == native  # what callers get, with the C form built
    assert len(decode_framed(native).columns.timestamp) == n


def test_a_value_the_c_encoder_does_not_write_falls_back_to_the_python_form(frames_c: ModuleType) -> None:
    [line] = _random_lines(random.Random(5), 1, 1)
    huge = (*line[:1], 2**63 + 5, *line[2:])  # an unsigned 64-bit int: msgspec writes it, the C form declines
    with pytest.raises(TypeError):
        frames_c.encode_framed([huge], "timeout", FRAME, LEVEL_INDEX)
    assert encode_framed([huge], "timeout") == _encode_framed_py([huge], "timeout")
    as_tuple = (line,)  # not a list: the Python form runs
    assert encode_framed(as_tuple, "timeout") == frames_c.encode_framed([line], "timeout", FRAME, LEVEL_INDEX)
