"""columns_of: lines given one by one, as the columns the engine's loop reads."""

from __future__ import annotations

import pytest

from pipeline.engine.columns import columns_of
from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import RecordLine, WindowConfig
from pipeline.engine.templates import Templates
from pipeline.types import FLAG_SECURITY, FLAG_TIMEOUT, LineView
from pipeline.wire.records import normalize

T0 = 1_790_000_000_000_000


def _line(session: str | None, i: int, **fields: object) -> LineView:
    rec = {"timestamp": T0 + i, "service": "svc", "level": "INFO", "message": f"step {i}",
           "session_id": session, **fields}  # fmt: skip
    return RecordLine(normalize(rec))


def test_lines_are_grouped_by_session_in_order_of_first_line_keeping_their_places() -> None:
    lines = [
        _line("a", 0),
        _line(None, 1, user_id="u", security_flags=["xss"]),
        _line("a", 2, attributes={"timeout": "1"}),
        _line("b", 3, endpoint="/e", latency_ms=3.5, status_code=200),
    ]
    cols = columns_of(lines, None, [b"0", b"1", b"2", b"3"], "timeout", Templates())
    assert (cols.keys, cols.counts) == (["a", "user:u", "b"], [2, 1, 1])
    assert cols.timestamp == [T0, T0 + 2, T0 + 1, T0 + 3]
    assert cols.idx == [0, 2, 1, 3] and cols.encoded == [b"0", b"2", b"1", b"3"]  # each keeps its place
    assert cols.flags == [0, FLAG_TIMEOUT, FLAG_SECURITY, 0]
    assert cols.endpoint == [None, None, None, "/e"] and cols.latency_ms == [None, None, None, 3.5]
    assert cols.size == [6, 6, 6, 6] and len(set(cols.template_id)) == 1 and cols.template_id[0]
    # the flag is for the attribute asked for; without templates the ids stay empty
    other = columns_of(lines, [5, 6, 7, 8], None, "deadline", None)
    assert other.flags == [0, 0, FLAG_SECURITY, 0] and other.template_id == [""] * 4
    assert other.idx == [5, 7, 6, 8] and other.encoded is None


def test_one_session_per_message_is_not_regrouped() -> None:
    lines = [_line("a", i) for i in range(3)]
    cols = columns_of(lines, None, None, "timeout", None)
    assert (cols.keys, cols.counts, cols.idx) == (["a"], [3], None)
    assert cols.views == lines


def test_columns_flagged_for_another_attribute_are_refused() -> None:
    engine = Hindsight(WindowConfig())
    lines = [_line("a", 0, level="ERROR")]
    cols = columns_of(lines, None, None, "deadline", None)
    with pytest.raises(ValueError, match="deadline"):
        engine.process_columns("logs.raw", 0, 0, cols)
    ok = columns_of(lines, None, None, "timeout", engine.shared.templates)
    rows = engine.process_columns("logs.raw", 0, 0, ok).curated["a"]
    assert [r["message"] for r in rows] == ["step 0"] and rows[0]["trigger_reasons"] == ["error"]
