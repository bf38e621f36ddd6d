"""Two worker processes sharing captures, auth-failure counts and latency baselines through one log
they both read in order (in-process here; tests/reliability runs it with two real workers): a security
flag in one captures its endpoint's lines in the other, and a user's auth failures spread over both
fire once."""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import WindowConfig
from pipeline.ops.workload import Workload, incident_workload
from pipeline.types import LogRecord
from pipeline.wire.records import normalize
from tests.unit.engine.support import MODE, decode, encode

T0 = 1_790_000_000_000_000
S = 1_000_000
CFG = WindowConfig(key_budget_lps=10**6, global_budget_lps=10**7)


class Cluster:
    """Two processes (A owns partitions 0-1, B owns 2-3) and the log between them; `delay` is how many
    messages pass before what a process wrote to the log reaches the readers."""

    def __init__(self, delay: int = 0) -> None:
        compact = MODE["buffers"] == "encoded"
        self.procs = {o: Hindsight(CFG, decode if compact else None, origin=o) for o in ("A", "B")}
        self.log: list[dict[str, Any]] = []
        self.read = {"A": 0, "B": 0}
        self.delay = delay
        self.got: dict[tuple[str, str, int], list[Any]] = {}
        self.triggers: list[tuple[str, str]] = []  # (process, trigger id) of every emitted row

    def owner(self, partition: int) -> str:
        return "A" if partition < 2 else "B"

    def collect(self, origin: str, em: Any) -> None:
        for rows in em.curated.values():
            for r in rows:
                self.got.setdefault(Workload.key(r), []).append(r)
                if "auth_failures" in r["trigger_reasons"]:
                    self.triggers.append((origin, r["trigger_id"]))

    def publish(self, origin: str) -> None:
        self.log.extend({**ev, "origin": origin} for ev in self.procs[origin].take_outbox())

    def deliver(self, upto: int | None = None) -> None:
        """Each process reads the log up to `upto` (all of it: until nothing new is written)."""
        while True:
            end = len(self.log) if upto is None else upto
            for origin, hs in self.procs.items():
                if self.read[origin] < end:
                    self.collect(origin, hs.apply_shared(self.log[self.read[origin] : end]))
                    self.read[origin] = end
                    self.publish(origin)  # what applying it changed (a trigger fired here)
            if upto is not None or all(n == len(self.log) for n in self.read.values()):
                return

    def run(self, lines: list[tuple[int, int, LogRecord]]) -> None:
        """(partition, offset, record) in arrival order, one line per message."""
        marks: list[int] = []
        for partition, offset, rec in lines:
            origin = self.owner(partition)
            hs = self.procs[origin]
            encoded = encode([rec]) if hs.shared.decode_line is not None else None
            self.collect(
                origin, hs.process_message("logs.raw", partition, offset, [rec], None, False, encoded)
            )
            self.publish(origin)
            marks.append(len(self.log))
            if len(marks) > self.delay:
                self.deliver(marks[-1 - self.delay])
        self.deliver()


def spread(records: list[LogRecord]) -> list[tuple[int, int, LogRecord]]:
    offsets = [0] * 4
    out = []
    for rec in records:
        partition = zlib.crc32(str(rec["session_id"]).encode()) % 4
        out.append((partition, offsets[partition], rec))
        offsets[partition] += 1
    return out


@pytest.mark.parametrize("delay", [0, 1, 25])
def test_two_processes_store_exactly_the_ground_truth(delay: int) -> None:
    work = incident_workload(sessions=90, seed=8)
    lines = spread(work.lines)
    assert {p for p, _, _ in lines} == {0, 1, 2, 3}
    cluster = Cluster(delay)
    cluster.run(lines)
    assert set(cluster.got) == work.expected
    assert all(len(rows) == 1 for rows in cluster.got.values())  # each line emitted once


def test_without_the_log_the_other_process_misses_the_capture() -> None:
    """What the log is for: two processes that share nothing store less than the ground truth."""
    work = incident_workload(sessions=90, seed=8)
    got: set[tuple[str, str, int]] = set()
    procs = {o: Hindsight(CFG) for o in ("A", "B")}
    for partition, offset, rec in spread(work.lines):
        em = procs["A" if partition < 2 else "B"].process_message("logs.raw", partition, offset, [rec])
        got.update(Workload.key(r) for rows in em.curated.values() for r in rows)
    assert got < work.expected


def line(t_s: float, session: str, partition_hint: str, **fields: Any) -> LogRecord:
    return normalize(
        {
            "timestamp": T0 + int(t_s * S),
            "service": "svc",
            "level": "DEBUG",
            "message": f"{session} {partition_hint} @{t_s:g}",
            "session_id": session,
            "endpoint": "/other",
            **fields,
        }
    )


def test_a_security_flag_in_one_process_captures_the_endpoint_in_the_other() -> None:
    cluster = Cluster(delay=3)
    lines = [
        (2, 0, line(1, "b1", "B", endpoint="/pay")),  # before the flag: not captured
        (2, 1, line(5, "b1", "B", endpoint="/pay")),  # in B, after the flag (arrives before it)
        (0, 0, line(4, "a1", "A", endpoint="/pay", security_flags=["sqli"])),
        (3, 0, line(6, "b2", "B", endpoint="/pay")),
        (3, 1, line(7, "b2", "B", endpoint="/cart")),  # another endpoint: not captured
        (2, 2, line(33, "b1", "B", endpoint="/pay")),  # in the follow period (30 s)
        (2, 3, line(40, "b1", "B", endpoint="/pay")),  # after it
    ]
    cluster.run(lines)
    got = {rows[0]["message"]: rows[0]["trigger_reasons"] for rows in cluster.got.values()}
    assert got == {"a1 A @4": ["security"], "b1 B @5": ["security"], "b2 B @6": ["security"],
                   "b1 B @33": ["security"]}  # fmt: skip


def test_auth_failures_of_one_user_spread_over_both_processes_fire_once() -> None:
    cluster = Cluster(delay=2)
    fail = {"status_code": 401, "user_id": "u1", "endpoint": "/login"}
    lines = [
        (0, 0, line(1, "s0", "A", **fail)),
        (2, 0, line(2, "s2", "B", **fail)),
        (1, 0, line(3, "s1", "A", **fail)),
        (3, 0, line(4, "s3", "B", **fail)),
        (3, 1, line(4.5, "s3", "B", user_id="u1")),  # before the 5th failure, same session as none
        (0, 1, line(5, "s0", "A", user_id="u1")),
        (2, 1, line(6, "s2", "B", **fail)),  # the 5th: in B, so B fires, once
        (2, 2, line(7, "s2", "B", user_id="u1")),  # follow-up of the firing session
        (0, 2, line(8, "s4", "A", endpoint="/login")),  # another user on the captured endpoint, in A
    ]
    cluster.run(lines)
    fired = {tid for _, tid in cluster.triggers}
    assert len(fired) == 1, cluster.triggers
    assert {origin for origin, _ in cluster.triggers} == {"B"}
    got = {rows[0]["message"] for rows in cluster.got.values()}
    # the firing session from lookback to follow, and the endpoint captured in both processes
    assert {"s2 B @2", "s2 B @6", "s2 B @7", "s4 A @8"} <= got
    assert "s0 A @5" not in got and "s3 B @4.5" not in got  # other sessions' non-failing lines
    # a sixth failure starts a new count: no second trigger
    more = Cluster(delay=0)
    more.run([*lines, (1, 1, line(9, "s1", "A", **fail))])
    assert len({tid for _, tid in more.triggers}) == 1


def test_latency_baselines_are_merged_across_processes() -> None:
    """An endpoint's p95 from both processes' parts of a closed window: B alone saw only slow lines."""
    cfg = WindowConfig(stats_window_us=10 * S, stats_grace_us=0)
    a, b = Hindsight(cfg, origin="A"), Hindsight(cfg, origin="B")
    for i in range(95):  # fast in A
        a.process_message("logs.raw", 0, i, [line(i * 0.1, f"a{i}", "A", endpoint="/e", latency_ms=10.0)])
    for i in range(5):  # slow in B
        b.process_message("logs.raw", 2, i, [line(i * 0.1, f"b{i}", "B", endpoint="/e", latency_ms=900.0)])
    for hs, p in ((a, 0), (b, 2)):  # the next window closes the first one
        hs.process_message("logs.raw", p, 999, [line(25, "z", "Z", endpoint="/x")])
    log = [{**ev, "origin": "A"} for ev in a.take_outbox()] + [
        {**ev, "origin": "B"} for ev in b.take_outbox()
    ]
    assert {ev["kind"] for ev in log} == {"baseline", "template"}  # the templates each learned, too
    b.apply_shared(log)
    a.apply_shared(log)
    p95_a, p95_b = a.shared.baseline_p95("/e"), b.shared.baseline_p95("/e")
    assert p95_a is not None and p95_a == p95_b and p95_a < 100  # B's own part alone: ~900


def test_a_count_completed_by_a_process_that_died_fires_in_the_partitions_next_owner() -> None:
    """A completes a user's count with its own failure, then dies before reading it back (so before it
    fired). B reads the log, rebuilds A's partition and fires: the session's lookback is emitted (a
    line A did send is one row in the store) and its follow-up continues live. A failure whose report
    never reached the log is reported by the rebuild and counted once."""
    fail = {"status_code": 401, "user_id": "u1", "endpoint": "/login"}
    past = [line(1, "s0", "A"), *(line(2 + i, "s0", "A", **fail) for i in range(5))]
    compact = MODE["buffers"] == "encoded"
    a = Hindsight(CFG, decode if compact else None, origin="A")
    for offset, rec in enumerate(past):
        a.process_message("logs.raw", 0, offset, [rec], None, False, encode([rec]) if compact else None)
    log = [{**ev, "origin": "A"} for ev in a.take_outbox() if ev["kind"] != "template"]
    assert [ev["kind"] for ev in log] == ["auth"] * 5
    lost = log.pop(2)  # that report never reached the log
    b = Hindsight(CFG, decode if compact else None, origin="B")
    assert b.apply_shared(log).curated == {}  # four counted, nothing fired
    for offset, rec in enumerate(past):
        b.process_message("logs.raw", 0, offset, [rec], None, True, encode([rec]) if compact else None)
    rebuilt = [ev for ev in b.take_outbox() if ev["kind"] != "template"]
    assert {ev["ref"] for ev in rebuilt} == {ev["ref"] for ev in [*log, lost]}  # all reported again
    fired = b.apply_shared([{**ev, "origin": "B"} for ev in rebuilt])  # only the lost one counts: the fifth
    rows = [r for rows in fired.curated.values() for r in rows]
    assert sorted(r["message"] for r in rows) == sorted(r["message"] for r in past)
    assert {tuple(r["trigger_reasons"]) for r in rows} == {("auth_failures",)}
    follow = line(9, "s0", "A")
    em = b.process_message("logs.raw", 0, 6, [follow], None, False, encode([follow]) if compact else None)
    assert [r["message"] for rows in em.curated.values() for r in rows] == [follow["message"]]


def test_a_count_completed_before_the_owner_died_fires_again_after_its_rebuild() -> None:
    """A's own failure completed the count (the log says so), A died around its firing; the next owner
    fires it after the rebuild, so the follow-up lines after the restart are still kept."""
    fail = {"status_code": 401, "user_id": "u2", "endpoint": "/login"}
    past = [line(1, "s9", "A"), *(line(2 + i, "s9", "A", **fail) for i in range(5))]
    compact = MODE["buffers"] == "encoded"
    a = Hindsight(CFG, decode if compact else None, origin="A")
    for offset, rec in enumerate(past):
        a.process_message("logs.raw", 0, offset, [rec], None, False, encode([rec]) if compact else None)
    log = [{**ev, "origin": "A"} for ev in a.take_outbox()]
    b = Hindsight(CFG, decode if compact else None, origin="B")
    b.apply_shared(log)
    refired = b.refire("logs.raw", 0)
    assert refired.curated == {}  # nothing of that partition yet
    out = []
    for offset, rec in enumerate(past):
        em = b.process_message("logs.raw", 0, offset, [rec], None, True, encode([rec]) if compact else None)
        out += [r for rows in em.curated.values() for r in rows]
    out += [r for rows in b.refire("logs.raw", 0).curated.values() for r in rows]
    assert sorted(r["message"] for r in out) == sorted(r["message"] for r in past)
    follow = line(20, "s9", "A")
    em = b.process_message("logs.raw", 0, 6, [follow], None, False, encode([follow]) if compact else None)
    assert [r["message"] for rows in em.curated.values() for r in rows] == [follow["message"]]


def test_a_count_completed_on_lines_the_dead_owner_never_committed_fires_when_they_come_again() -> None:
    """A completed a user's count (the log says so) with lines it never committed, then died: the next
    owner rebuilds only up to the committed offset, so refire cannot find them; they come to it live
    and its own reports of them are repeats the count ignores. The log's decision fires all the same,
    with the session's lookback (what the fault test lost: a whole auth_failures lookback)."""
    fail = {"status_code": 401, "user_id": "u3", "endpoint": "/login"}
    past = [line(1, "s7", "A"), line(1.5, "s7", "A"), *(line(2 + i, "s7", "A", **fail) for i in range(5))]
    compact = MODE["buffers"] == "encoded"

    def feed(hs: Hindsight, offset: int, rec: LogRecord, replay: bool) -> list[Any]:
        encoded = encode([rec]) if compact else None
        em = hs.process_message("logs.raw", 0, offset, [rec], None, replay, encoded)
        return [r for rows in em.curated.values() for r in rows]

    a = Hindsight(CFG, decode if compact else None, origin="A")
    for offset, rec in enumerate(past):
        feed(a, offset, rec, False)
    log = [{**ev, "origin": "A"} for ev in a.take_outbox()]
    assert [ev["kind"] for ev in log if ev["kind"] == "auth"] == ["auth"] * 5  # A dies before reading it
    committed = 4  # A committed offsets 0-3: two plain lines and two failures
    b = Hindsight(CFG, decode if compact else None, origin="B")
    out = [r for rows in b.apply_shared(log).curated.values() for r in rows]
    for offset, rec in enumerate(past[:committed]):
        out += feed(b, offset, rec, True)
    out += [r for rows in b.refire("logs.raw", 0).curated.values() for r in rows]
    assert out == []  # the failure that completed the count is not among the rebuilt lines
    for offset, rec in enumerate(past[committed:], committed):
        out += feed(b, offset, rec, False)
    again = [{**ev, "origin": "B"} for ev in b.take_outbox() if ev["kind"] == "auth"]
    # the rebuilt failures and the live ones, reported again: all repeats for the count
    assert [ev["ref"] for ev in again] == [ev["ref"] for ev in log if ev["kind"] == "auth"]
    fired = b.apply_shared(again)
    out += [r for rows in fired.curated.values() for r in rows]
    assert sorted({r["message"] for r in out}) == sorted(r["message"] for r in past)
    assert {tuple(r["trigger_reasons"]) for r in out if r["message"] == "s7 A @1"} == {("auth_failures",)}
    assert len({r["trigger_id"] for r in out if "auth_failures" in r["trigger_reasons"]}) == 1
    follow = line(9, "s7", "A")
    assert [r["message"] for r in feed(b, len(past), follow, False)] == [follow["message"]]
