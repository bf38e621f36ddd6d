"""Each trigger, follow-up, endpoint captures, window stats, budgets, and the ground-truth workload."""

from __future__ import annotations

import zlib
from typing import Any

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import WindowConfig
from pipeline.ops.workload import Workload, generate, incident_workload
from pipeline.types import RawLine
from pipeline.wire.records import normalize
from tests.unit.engine.support import encode, new_hindsight, process

T0 = 1_790_000_000_000_000
S = 1_000_000


class Feed:
    def __init__(self, partitions: int = 1) -> None:
        self.offsets = [0] * partitions

    def __call__(self, session: str, t_s: float, partition: int = 0, **fields: Any) -> RawLine:
        self.offsets[partition] += 1
        obj = {
            "timestamp": T0 + int(t_s * S),
            "service": "svc",
            "level": "DEBUG",
            "session_id": session,
            "message": f"{session}@{t_s}",
            "endpoint": "/e",
        }
        obj.update(fields)
        return RawLine(normalize(obj), "logs.raw", partition, self.offsets[partition])


def messages(hs: Hindsight, lines: list[RawLine]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for line in lines:
        for key, rows in process(hs, [line]).curated.items():
            out.setdefault(key, []).extend((r["message"], tuple(r["trigger_reasons"])) for r in rows)
    return out


def test_follow_up_captures_lines_after_the_trigger_and_extends() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig(lookback_us=10 * S, follow_us=5 * S))
    lines = [
        feed("a", 0),
        feed("a", 1, level="ERROR", message="e1"),
        feed("a", 5),
        feed("a", 6, level="ERROR", message="e2"),
        feed("a", 10.5),
        feed("a", 11.5),
    ]
    got = [m for m, _ in messages(hs, lines)["a"]]
    # a@5 within e1's follow; e2 extends to 11; a@11.5 is past it
    assert got == ["a@0", "e1", "a@5", "e2", "a@10.5"]


def test_latency_spike_against_floor_and_endpoint_baseline() -> None:
    feed = Feed()
    cfg = WindowConfig(
        latency_floor_ms=100,
        latency_factor=3,
        stats_window_us=10 * S,
        stats_grace_us=1 * S,
        slow_session_p95_ms=10**9,
    )
    hs = new_hindsight(cfg)
    warmup = [feed(f"w{i}", i * 0.5, latency_ms=90.0) for i in range(20)]  # window [0,10): p95 90 ms
    assert messages(hs, warmup) == {}  # below the floor
    later = [
        feed("x", 20, latency_ms=150.0, message="no spike"),
        feed("y", 21, latency_ms=700.0, message="spike"),
    ]
    got = messages(hs, later)
    assert "x" not in got  # above the floor, but below 3 x the endpoint's p95 of 90 ms
    assert got["y"] == [("spike", ("latency",))]


def test_slow_session_fires_once_per_window() -> None:
    feed = Feed()
    hs = new_hindsight(
        WindowConfig(slow_session_p95_ms=500, slow_session_min_lines=3, latency_floor_ms=10**9)
    )
    lines = [feed("s", i, latency_ms=900.0, message=f"slow{i}") for i in range(6)]
    got = messages(hs, lines)["s"]
    assert got[0:3] == [
        ("slow0", ("slow_session",)),
        ("slow1", ("slow_session",)),
        ("slow2", ("slow_session",)),
    ]
    assert sum(1 for _, reasons in got if reasons == ("slow_session",)) == 6  # the rest are its follow-up
    assert hs.metrics.triggers == 1


def test_timeout_by_status_and_attribute() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig())
    got = messages(
        hs,
        [
            feed("a", 1, status_code=504, message="gw"),
            feed("b", 1, attributes={"timeout": "db"}, message="db"),
        ],
    )
    assert got == {"a": [("gw", ("timeout",))], "b": [("db", ("timeout",))]}


def test_security_flag_captures_the_whole_endpoint_across_partitions() -> None:
    feed = Feed(partitions=2)
    hs = new_hindsight(WindowConfig(follow_us=10 * S))
    before = [
        feed("other", 2, partition=1, message="other-before"),
        feed("other", 4, partition=1, endpoint="/x", message="other-elsewhere"),
        feed("other", 5.5, partition=1, message="other-after-start"),
    ]
    assert messages(hs, before) == {}
    trig = feed("bad", 5, partition=0, security_flags=["sqli"], message="attack")
    got = messages(hs, [trig])
    assert ("attack", ("security",)) in got["bad"]
    assert got["other"] == [("other-after-start", ("security",))]  # buffered, same endpoint, after t
    live = messages(
        hs,
        [feed("third", 14, partition=1, message="live"), feed("third", 16, partition=1, message="too late")],
    )
    assert live == {"third": [("live", ("security",))]}


def test_repeated_auth_failures_of_one_user() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig(auth_fail_count=3))
    lines = [feed("a", i, status_code=401, user_id="mallory", message=f"fail{i}") for i in range(3)]
    got = messages(hs, lines)["a"]
    assert [m for m, _ in got] == ["fail0", "fail1", "fail2"] and got[-1][1] == ("auth_failures",)


def test_window_stats_and_slowest_sessions() -> None:
    feed = Feed()
    hs = new_hindsight(
        WindowConfig(
            stats_window_us=10 * S,
            stats_grace_us=S,
            slowest_sessions=2,
            latency_floor_ms=10**9,
            slow_session_p95_ms=10**9,
        )
    )
    lines = [
        feed(f"s{i % 3}", i * 0.3, latency_ms=float(10 * (i % 3 + 1)), level="ERROR" if i == 4 else "DEBUG")
        for i in range(30)
    ]
    stats = []
    for line in [*lines, feed("late", 25)]:
        stats.extend(process(hs, [line]).stats)
    [endpoint] = [s for s in stats if s["kind"] == "endpoint" and s["window_start_us"] == T0 - T0 % (10 * S)]
    assert endpoint["count"] == 30 and endpoint["errors"] == 1 and endpoint["endpoint"] == "/e"
    assert endpoint["first_offset"] == 1 and endpoint["last_offset"] == 30
    assert abs(endpoint["p99_ms"] - 30) < 1 and abs(endpoint["p50_ms"] - 20) < 1
    slow = sorted((s["rank"], s["session"]) for s in stats if s["kind"] == "slow_session")
    assert slow == [(1, "s2"), (2, "s1")]


def test_storm_is_summarised_not_dropped() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig(key_budget_lps=10, budget_burst_s=1, follow_us=60 * S))
    out: list[dict[str, Any]] = []
    lines = [feed("storm", 0, level="ERROR", message="first")] + [
        feed("storm", 0.001 * i) for i in range(1, 200)
    ]
    for line in [*lines, feed("storm", 3)]:
        for rows in process(hs, [line]).curated.values():
            out.extend(rows)
    kept = [r for r in out if r["trigger_reasons"] != ["summary"]]
    summaries = [r for r in out if r["trigger_reasons"] == ["summary"]]
    # a burst of 10, one more refilled by t=0.109, then the line at t=3
    assert len(kept) == 12
    assert summaries and sum(int(s["attributes"]["hindsight.summary.lines"]) for s in summaries) == 189
    assert hs.metrics.suppressed_lines == 189


def test_memory_budget_evicts_idle_sessions_and_counts() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig(memory_budget_bytes=20_000))
    for i in range(100):
        process(hs, [feed(f"s{i}", i * 0.01, message="x" * 100)])
    assert hs.shared.buffered_bytes <= 20_000
    assert hs.metrics.evicted_sessions > 0 and hs.sessions() < 100


def test_ground_truth_workload_in_memory() -> None:
    work = incident_workload(sessions=80, seed=21)
    assert {i.kind for i in work.injected} == {"error", "latency", "timeout", "security", "auth_failures"}
    cfg = WindowConfig(key_budget_lps=10**6, global_budget_lps=10**7)
    hs = new_hindsight(cfg)
    got: set[tuple[str, str, int]] = set()
    for offset, record in enumerate(work.lines):  # two partitions, by session, as the publisher keys them
        partition = zlib.crc32(record["session_id"].encode()) % 2  # stable: str hash() is salted
        for rows in process(hs, [RawLine(record, "logs.raw", partition, offset)]).curated.values():
            for r in rows:
                key = Workload.key(r)
                assert key not in got, "emitted twice"
                got.add(key)
    assert got == work.expected


def published(
    records: list[Any], partitions: int = 2, max_lines: int = 25, linger_us: int = 1_000_000
) -> list[RawLine]:
    """Group lines per session into raw messages as the publisher does (size or linger), with offsets."""
    offsets = [0] * partitions
    open_groups: dict[str, list[Any]] = {}
    out: list[RawLine] = []

    def send(sid: str) -> None:
        group = open_groups.pop(sid)
        partition = sum(map(ord, sid)) % partitions
        out.extend(RawLine(rec, "logs.raw", partition, offsets[partition], i) for i, rec in enumerate(group))
        offsets[partition] += 1

    for rec in records:
        for sid in [s for s, g in open_groups.items() if rec["timestamp"] - g[0]["timestamp"] > linger_us]:
            send(sid)
        open_groups.setdefault(rec["session_id"], []).append(rec)
        if len(open_groups[rec["session_id"]]) >= max_lines:
            send(rec["session_id"])
    for sid in list(open_groups):
        send(sid)
    return out


def run_messages(hs: Hindsight, lines: list[RawLine]) -> set[tuple[str, str, int]]:
    """Feed whole raw messages (the worker's path) and collect the curated keys, failing on duplicates."""
    got: set[tuple[str, str, int]] = set()
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and (lines[j].partition, lines[j].offset) == (
            lines[i].partition,
            lines[i].offset,
        ):
            j += 1
        run = lines[i:j]
        records = [ln.record for ln in run]
        encoded = encode(records) if hs.shared.decode_line is not None else None
        em = hs.process_message("logs.raw", run[0].partition, run[0].offset, records, None, False, encoded)
        for rows in em.curated.values():
            for r in rows:
                key = Workload.key(r)
                assert key not in got, "emitted twice"
                got.add(key)
        i = j
    return got


def test_ground_truth_with_batched_messages() -> None:
    """Lines arriving many per raw message (the fast path) keep exactly the same set."""
    work = incident_workload(sessions=80, seed=21)
    lines = published(work.lines, linger_us=6_000_000)  # a slow trickle: ~7 lines per message
    assert len(lines) == len(work.lines) and max(ln.index for ln in lines) >= 5
    cfg = WindowConfig(key_budget_lps=10**6, global_budget_lps=10**7)
    assert run_messages(new_hindsight(cfg), lines) == work.expected


def test_generated_workload_batched_equals_line_by_line() -> None:
    work = generate(sessions=60, requests_per_session=5, error_rate=0.1, spike_rate=0.1, seed=4)
    cfg = WindowConfig(key_budget_lps=10**6, global_budget_lps=10**7, stats_window_us=10 * S)
    batched = new_hindsight(cfg)
    got = run_messages(batched, published(work.lines))
    assert got == work.expected
    single = new_hindsight(cfg)
    one_by_one = run_messages(single, [RawLine(r, "logs.raw", 0, i) for i, r in enumerate(work.lines)])
    assert one_by_one == got
    assert batched.metrics.lines_in == single.metrics.lines_in == len(work.lines)


def budget_of(lines: float) -> int:
    """A memory budget that holds about this many of the tests' lines, as this mode buffers them."""
    probe = new_hindsight(WindowConfig())
    process(probe, [Feed()("p", 0, message="x" * 100)])
    return int(probe.shared.buffered_bytes * lines)


def test_memory_budget_evicts_least_recently_active_first_with_exact_counts() -> None:
    feed = Feed()
    budget = budget_of(11.7)
    hs = new_hindsight(WindowConfig(memory_budget_bytes=budget))
    for i in range(5):
        process(hs, [feed(f"s{i}", i * 0.01, message="x" * 100)])
    process(hs, [feed("s0", 0.5, message="x" * 100)])  # s0 active again: now the most recent
    before = hs.shared.buffered_bytes
    for i in range(5, 40):
        process(hs, [feed(f"s{i}", 1 + i * 0.01, message="x" * 100)])
    sessions = next(iter(hs.engines.values())).sessions
    kept = list(sessions)
    m = hs.metrics
    assert hs.shared.buffered_bytes <= budget and before <= budget
    assert kept == [f"s{i}" for i in range(40 - len(kept), 40)]  # the most recently active stay
    assert m.evicted_sessions == 40 - len(kept)  # 40 sessions seen
    assert m.evicted_lines == 41 - sum(st.lines for st in sessions.values())  # s0 held two lines


def test_memory_budget_keeps_a_recently_active_old_session() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig(memory_budget_bytes=budget_of(11.7)))
    for i in range(5):
        process(hs, [feed(f"s{i}", i * 0.01, message="x" * 100)])
    process(hs, [feed("s0", 0.5, message="x" * 100)])
    for i in range(5, 12):
        process(hs, [feed(f"s{i}", 1 + i * 0.01, message="x" * 100)])
    sessions = next(iter(hs.engines.values())).sessions
    assert hs.metrics.evicted_sessions >= 1
    assert "s0" in sessions and "s1" not in sessions  # least recently active leaves first, not oldest


def test_lines_arriving_after_their_trigger_are_kept_only_inside_its_window() -> None:
    # producers that key by pod deliver a session's lines out of order: a line from before the error
    # can arrive after it. Inside the lookback it is kept (as follow-up); older ones never were.
    feed = Feed()
    hs = new_hindsight(WindowConfig(lookback_us=10 * S, follow_us=5 * S))
    got = messages(
        hs,
        [
            feed("s", 100, level="ERROR", message="boom"),
            feed("s", 95, message="late, in lookback"),
            feed("s", 89, message="late, before lookback"),
            feed("s", 104, message="after, in follow"),
            feed("s", 106, message="after follow"),
        ],
    )
    assert [m for m, _ in got["s"]] == ["boom", "late, in lookback", "after, in follow"]


def test_lines_arriving_before_their_trigger_but_later_than_its_window_are_not_kept() -> None:
    feed = Feed()
    hs = new_hindsight(WindowConfig(lookback_us=10 * S, follow_us=5 * S))
    got = messages(
        hs,
        [
            feed("s", 112, message="early arrival, after the follow-up"),
            feed("s", 103, message="early arrival, in the follow-up"),
            feed("s", 92, message="before, in lookback"),
            feed("s", 100, level="ERROR", message="boom"),
        ],
    )
    assert [m for m, _ in got["s"]] == ["early arrival, in the follow-up", "before, in lookback", "boom"]


def test_a_slow_session_decided_on_a_later_line_keeps_the_slow_lines_window() -> None:
    # the slow line arrives before its window has enough lines (out of order); a later line completes
    # the check: the capture is the slow line's window, not the completing line's
    feed = Feed()
    config = WindowConfig(slow_session_p95_ms=500, slow_session_min_lines=3, latency_floor_ms=10**9,
                          lookback_us=10 * S, follow_us=5 * S)  # fmt: skip
    hs = new_hindsight(config)
    got = messages(
        hs,
        [
            feed("s", 15, latency_ms=900.0, message="slow"),
            feed("s", 10, latency_ms=900.0, message="before it, arriving late"),
            feed("s", 30, latency_ms=10.0, message="completes the check, after the window"),
        ],
    )
    assert got["s"] == [("slow", ("slow_session",)), ("before it, arriving late", ("slow_session",))]


def test_sessions_quiet_beyond_the_lookback_are_forgotten_at_tick_not_evicted() -> None:
    """A session seen once holds lines no trigger can reach after lookback (+10 s for disorder): the
    tick forgets it, so the memory budget is not spent on it and nothing counts as evicted."""
    feed = Feed()
    hs = new_hindsight(WindowConfig(lookback_us=10 * S, follow_us=30 * S))
    process(hs, [feed("old", 0), feed("old", 1)])
    process(hs, [feed("following", 2, level="ERROR", message="boom")])  # follow-up until t=32
    process(hs, [feed("recent", 15)])
    process(hs, [feed("now", 25)])
    before = hs.shared.buffered_bytes
    hs.tick(T0 + 25 * S)  # horizon: 25 - 10 - 10 = 5 s
    eng = next(iter(hs.engines.values()))
    assert list(eng.sessions) == ["following", "recent", "now"]
    assert hs.metrics.evicted_sessions == 0 and hs.metrics.evicted_lines == 0
    assert 0 < hs.shared.buffered_bytes < before
    assert hs.buffered_lines() == 3
