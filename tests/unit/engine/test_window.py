"""Session windows: what an error re-emits, what WARN forwards, what is never emitted, bounds."""

from __future__ import annotations

from pipeline.engine.model import WindowConfig
from pipeline.types import Level, RawLine
from pipeline.wire.records import normalize
from tests.unit.engine.support import buffered, new_hindsight, process

T0 = 1_790_000_000_000_000
S = 1_000_000


class Feed:
    """Builds RawLines with increasing offsets, as one partition would deliver them."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, session: str, level: str, t_s: float, msg: str = "") -> RawLine:
        self.offset += 1
        record = normalize(
            {
                "timestamp": T0 + int(t_s * S),
                "service": "svc",
                "level": level,
                "message": msg or f"{level}@{t_s}",
                "session_id": session,
            }
        )
        return RawLine(record, "logs.raw", 0, self.offset)


class SessionWindows:
    """The engine, returning curated records by key (what these tests look at)."""

    def __init__(self, config: WindowConfig) -> None:
        self.hs = new_hindsight(config)

    def process(self, lines: list[RawLine]) -> dict[str, list]:
        return process(self.hs, lines).curated

    def __len__(self) -> int:
        return self.hs.sessions()

    def buffered(self, key: str) -> list[RawLine]:
        return buffered(self.hs, key)

    @property
    def metrics(self):  # type: ignore[no-untyped-def]
        return self.hs.metrics


def emitted(out: dict[str, list], key: str) -> list[str]:
    return [r["message"] for r in out.get(key, [])]


def test_error_re_emits_lookback_window_and_error() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig(lookback_us=60 * S))
    lines = [feed("a", "DEBUG", t) for t in (0, 10, 50, 70, 100)] + [feed("a", "ERROR", 110, "boom")]
    out = win.process(lines)
    # 110 - 60 = 50: lines at 50, 70, 100 are inside; 0 and 10 are not
    assert emitted(out, "a") == ["DEBUG@50", "DEBUG@70", "DEBUG@100", "boom"]
    records = out["a"]
    assert {r["trigger_offset"] for r in records} == {lines[-1].offset}
    assert {r["trigger_id"] for r in records} == {f"t-logs.raw:0:{lines[-1].offset}:0"}
    assert all(r["trigger_reasons"] == ["error"] for r in records)
    assert [r["raw_offset"] for r in records] == [3, 4, 5, 6]


def test_quiet_session_debug_never_emitted_and_warn_forwarded() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig())
    out = win.process(
        [feed("q", "DEBUG", 1), feed("q", "INFO", 2), feed("q", "WARN", 3, "careful"), feed("q", "TRACE", 4)]
    )
    assert emitted(out, "q") == ["careful"]
    assert out["q"][0]["trigger_reasons"] == ["baseline"] and out["q"][0]["trigger_id"] is None


def test_no_line_emitted_twice() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig())
    first = win.process([feed("a", "INFO", 1), feed("a", "WARN", 2, "w"), feed("a", "ERROR", 3, "e1")])
    second = win.process([feed("a", "INFO", 4, "i4"), feed("a", "FATAL", 5, "e2")])
    assert emitted(first, "a") == ["w", "INFO@1", "e1"]
    assert emitted(second, "a") == ["i4", "e2"]


def test_sessions_are_independent() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig())
    out = win.process([feed("a", "INFO", 1), feed("b", "INFO", 1), feed("b", "ERROR", 2, "b-err")])
    assert "a" not in out
    assert emitted(out, "b") == ["INFO@1", "b-err"]


def test_trigger_level_is_configurable() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig(trigger_level=Level.FATAL))
    out = win.process([feed("a", "INFO", 1), feed("a", "ERROR", 2, "err")])
    assert emitted(out, "a") == ["err"]  # forwarded as baseline, no capture
    assert out["a"][0]["trigger_reasons"] == ["baseline"]


def test_session_line_bound_counts_evictions() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig(session_max_lines=3))
    out = win.process([feed("a", "DEBUG", t) for t in range(5)] + [feed("a", "ERROR", 6, "e")])
    assert emitted(out, "a") == ["DEBUG@2", "DEBUG@3", "DEBUG@4", "e"]
    assert win.metrics.evicted_lines == 3  # two DEBUG lines, then one more when the error was added


def test_idle_sessions_evicted_beyond_max_sessions() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig(max_sessions=2))
    win.process([feed("a", "DEBUG", 1), feed("b", "DEBUG", 1), feed("a", "DEBUG", 2), feed("c", "DEBUG", 3)])
    assert len(win) == 2
    assert win.buffered("b") == []  # least recently active
    assert win.metrics.evicted_sessions == 1 and win.metrics.evicted_lines == 1


def test_key_fallback_without_session() -> None:
    feed = Feed()
    win = SessionWindows(WindowConfig())
    line = feed("x", "ERROR", 1)
    record = dict(line.record)
    record["session_id"] = None
    record["user_id"] = "u9"
    out = win.process([RawLine(record, "logs.raw", 0, 99)])  # type: ignore[arg-type]
    assert list(out) == ["user:u9"]
