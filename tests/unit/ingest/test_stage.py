"""The ingest stage without Kafka: any shape in, canonical batches out, each line on its session's
partition (the Java client's murmur2) with its origin; refusals with reasons; and the worker's side,
which drops the repeats an ingest restart produces and keeps each line's raw identity."""

from __future__ import annotations

import random

import orjson
import pytest
from aiokafka.partitioner import murmur2

from pipeline import compiled
from pipeline.engine.templates import mask, template_id
from pipeline.ingest import stage as stage_module
from pipeline.ingest.stage import IngestStage, RawMessage, SessionPartitioner
from pipeline.settings import Settings
from pipeline.wire import raw as raw_module
from pipeline.wire.raw import RawDecoder
from pipeline.wire.sessions import decode_sessions
from pipeline.worker.processor import RawProcessor
from tests.conftest import unavailable

T_MS = 1_764_496_800_000


def test_partitions_match_the_java_clients_murmur2() -> None:
    # Kafka's own test vectors (UtilsTest.testMurmur2)
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829, "abc": 479470107}  # fmt: skip
    for key, java in vectors.items():
        assert murmur2(key.encode()) == java & 0xFFFFFFFF  # the same 32 bits, read unsigned
        assert SessionPartitioner(12)(key) == (java & 0x7FFFFFFF) % 12


def test_the_c_murmur2_is_the_java_clients() -> None:
    if _ROUTE_C is None:
        unavailable("the C ingest loop is not built here (make native builds it)")
    rng = random.Random(3)
    keys = [b"", b"21", b"foobar", b"abc", "séance-ü".encode()]
    keys += [rng.randbytes(n) for n in range(64) for _ in range(20)]
    for key in keys:
        assert _ROUTE_C.murmur2(key) == murmur2(key), key
    with pytest.raises(TypeError):
        _ROUTE_C.murmur2("a str")


def _msg(offset: int, value: object, partition: int = 0, ts: int | None = T_MS) -> RawMessage:
    return RawMessage("logs.raw", partition, offset, ts, orjson.dumps(value))


def test_lines_of_any_shape_and_key_meet_on_their_sessions_partition() -> None:
    stage = IngestStage(RawDecoder(1 << 20), partitions=4, max_lines_per_message=2)
    messages = [
        _msg(0, {"service": "a", "level": "INFO", "message": "m0", "session_id": "s1"}),
        _msg(1, {"event": "m1", "level": "info", "service": "a", "session_id": "s1"}, partition=3),
        _msg(
            2,
            [{"service": "a", "level": "INFO", "message": f"b{i}", "session_id": f"s{i}"} for i in range(5)],
        ),
        _msg(3, {"level": 30, "time": T_MS, "msg": "m3", "service": "a", "session_id": "s1"}, partition=1),
    ]
    routed = stage.route(messages)
    lines = {
        part: [rec for v in values for rec in decode_sessions(v)] for part, values in routed.values.items()
    }
    assert sum(map(len, lines.values())) == routed.lines == 8 and not routed.rejected
    for part, recs in lines.items():
        for rec in recs:
            assert part == SessionPartitioner(4)(rec["session_id"] or "")
    s1 = [r for r in lines[SessionPartitioner(4)("s1")] if r["session_id"] == "s1"]
    assert [(r["message"], r["raw_partition"], r["raw_offset"], r["raw_index"]) for r in s1] == [
        ("m0", 0, 0, 0), ("m1", 3, 1, 0), ("b1", 0, 2, 1), ("m3", 1, 3, 0),
    ]  # fmt: skip
    assert all(len(decode_sessions(v)) <= 2 for values in routed.values.values() for v in values)


class _ErrorEvent(RawMessage):
    """What consume() hands out instead of a message for a partition event (here end of partition)."""

    def error(self) -> str:  # type: ignore[override]
        return "partition eof"


def test_each_raw_partitions_first_and_next_offsets_are_noted_and_error_events_set_aside() -> None:
    stage = IngestStage(RawDecoder(1 << 20), partitions=2)
    line = {"service": "a", "level": "INFO", "message": "m", "session_id": "s"}
    runs = [(0, 10), (0, 11), (0, 12), (3, 5), (3, 6), (0, 13)]  # consume() interleaves partitions' runs
    messages = [_msg(o, line, partition=p) for p, o in runs]
    messages.insert(4, _ErrorEvent("logs.raw", 3, 6, None, None))
    routed = stage.route(messages)
    assert routed.starts == {("logs.raw", 0): 10, ("logs.raw", 3): 5}
    assert routed.positions == {("logs.raw", 0): 14, ("logs.raw", 3): 7}
    assert routed.errors == ["partition eof"] and routed.lines == 6 and stage.messages_in == 6
    assert stage.route([]).positions == {}


def test_refusals_carry_their_reason_and_the_bad_element_only() -> None:
    stage = IngestStage(RawDecoder(1 << 20), partitions=2)
    good = {"service": "a", "level": "INFO", "message": "ok", "session_id": "s"}
    routed = stage.route(
        [_msg(7, [good, {"service": "a", "message": "no level"}, good]), _msg(8, "just a string")]
    )
    assert routed.lines == 2
    assert [(m.offset(), r.error_type, r.index) for m, r in routed.rejected] == [
        (7, "missing_field", 1), (8, "wrong_type", None),
    ]  # fmt: skip
    assert orjson.loads(routed.rejected[0][1].payload) == {"service": "a", "message": "no level"}
    assert stage.dlq_by_type == {"missing_field": 1, "wrong_type": 1}


def test_the_worker_keeps_origins_and_drops_what_an_ingest_restart_repeats() -> None:
    settings = Settings(key_budget_lps=1e9, global_budget_lps=1e9)
    stage = IngestStage(RawDecoder(1 << 20), partitions=1)
    raw = [
        _msg(10, {"service": "a", "level": "INFO", "message": "before", "session_id": "s"}),
        _msg(11, {"service": "a", "level": "ERROR", "message": "boom", "session_id": "s"}),
    ]
    [first] = stage.route(raw).values[0]
    again = stage.route(raw).values[0][0]  # the same raw messages, consumed again after a crash
    processor = RawProcessor(settings)
    out = processor.handle(settings.sessions_topic, 0, 0, first)
    rows = [r for rows in out.curated.values() for r in rows]
    origins = [
        (r["message"], r["raw_topic"], r["raw_partition"], r["raw_offset"], r["raw_index"]) for r in rows
    ]
    assert origins == [("before", "logs.raw", 0, 10, 0), ("boom", "logs.raw", 0, 11, 0)]
    assert rows[1]["trigger_id"] == "t-logs.raw:0:11:0"  # the same id as the raw line would have had
    repeat = processor.handle(settings.sessions_topic, 0, 1, again)
    assert not repeat.curated and processor.dedup.repeats == 2
    later = stage.route([_msg(12, {"service": "a", "level": "INFO", "message": "after", "session_id": "s"})])
    follow = processor.handle(settings.sessions_topic, 0, 2, later.values[0][0])
    assert [r["message"] for rows in follow.curated.values() for r in rows] == ["after"]  # the follow-up


def test_single_canonical_objects_take_the_fast_path_with_the_same_result() -> None:
    line = {"timestamp": T_MS * 1000 + 5, "service": "a", "level": "WARN", "message": "m", "session_id": "s"}
    null_observed = {**line, "message": "n", "observed_timestamp": None}
    decoder = RawDecoder(1 << 20)
    stage = IngestStage(decoder, partitions=3)
    routed = stage.route([_msg(4, line, partition=2), _msg(5, null_observed, partition=2)])
    [fast, slow] = [r for values in routed.values.values() for v in values for r in decode_sessions(v)]
    assert decoder.shapes == {"canonical": 2}  # one by the fast path, one by the lenient decoder
    for rec, offset in ((fast, 4), (slow, 5)):
        assert (rec["raw_topic"], rec["raw_partition"], rec["raw_offset"], rec["raw_index"]) == (
            "logs.raw", 2, offset, 0,
        )  # fmt: skip
        assert rec["observed_timestamp"] == T_MS * 1000  # the Kafka record's time, on every redelivery
        assert rec["severity_number"] == 13 and rec["timestamp"] == line["timestamp"]
    # the template id is the message's (ingest computes it on both paths)
    assert fast["template_id"] == template_id(mask("m")) and slow["template_id"] == template_id(mask("n"))
    differ = ("message", "raw_offset", "template_id")
    assert {k: v for k, v in fast.items() if k not in differ} == {
        k: v for k, v in slow.items() if k not in differ
    }


def test_each_message_is_framed_with_columns_that_agree_with_its_lines() -> None:
    """The worker reads the frame instead of the lines, so every column must say what the line says:
    by the fast path (a canonical object) and the lenient one (another shape), flags included."""
    from pipeline.types import FLAG_SECURITY, FLAG_TIMEOUT
    from pipeline.wire.frames import decode_framed, is_framed

    t = T_MS * 1000
    lines = [
        {"timestamp": t + 3, "service": "a", "level": "INFO", "message": "m1", "session_id": "s1",
         "endpoint": "/e", "latency_ms": 12.5, "status_code": 504, "attributes": {"timeout": "1"}},
        {"timestamp": t + 1, "service": "b", "level": "ERROR", "message": "m22", "user_id": "u",
         "security_flags": ["sqli"]},
        {"timestamp": t + 2, "service": "a", "level": "DEBUG", "message": "m333", "session_id": "s1"},
    ]  # fmt: skip
    structlog_shape = {"event": "hello", "level": "warning", "timestamp": "2025-11-30T10:00:00Z",
                       "service": "c", "session_id": "s2", "attributes": {"timeout": "x"}}  # fmt: skip
    stage = IngestStage(RawDecoder(1 << 20), partitions=1)
    msgs = [_msg(10 + i, line) for i, line in enumerate(lines)] + [
        RawMessage("logs.raw", 1, 3, T_MS, orjson.dumps([structlog_shape, structlog_shape]))
    ]
    [value] = stage.route(msgs).values[0]
    assert is_framed(value)
    framed = decode_framed(value)
    cols = framed.columns
    records = decode_sessions(value)
    assert sum(cols.counts) == len(records) == 5
    starts = [sum(cols.counts[:g]) for g in range(len(cols.counts))]
    for g, (key, start) in enumerate(zip(cols.keys, starts, strict=True)):
        for r in records[start : start + cols.counts[g]]:
            assert (r.get("session_id") or f"user:{r.get('user_id')}") == key
    for i, r in enumerate(records):
        want_flags = (FLAG_SECURITY if r["security_flags"] else 0) | (
            FLAG_TIMEOUT if "timeout" in r["attributes"] else 0
        )
        assert (cols.timestamp[i], cols.level[i], cols.service[i], cols.endpoint[i], cols.user_id[i],
                cols.latency_ms[i], cols.status_code[i], cols.flags[i], cols.template_id[i],
                cols.size[i]) == (
            r["timestamp"], r["level"], r["service"], r["endpoint"], r["user_id"], r["latency_ms"],
            r["status_code"], want_flags, r["template_id"], len(r["message"]))  # fmt: skip
        origins = framed.origins
        assert (origins.raw_partition[i], origins.raw_offset[i], origins.raw_index[i]) == (
            r["raw_partition"], r["raw_offset"], r["raw_index"])  # fmt: skip
    # within a session, event-time order; sessions in order of their first line in time
    # (the structlog lines' time, 10:00:00.000000, is the earliest)
    assert [r["message"] for r in records] == ["hello", "hello", "m22", "m333", "m1"]
    assert [r["raw_index"] for r in records[:2]] == [0, 1]


# --- the C loop (pipeline/ingest/_route.c) routes exactly as the Python form ---

_ROUTE_C = compiled.built("pipeline.ingest._route")  # also under HINDSIGHT_NATIVE=0


def _mixed_poll(rng: random.Random, n: int) -> list[RawMessage]:
    """A poll of every kind of message the loop meets, its partitions' runs interleaved."""
    base = {"service": "a", "level": "INFO", "message": "m", "timestamp": T_MS * 1000}
    kinds: list[object] = [
        {**base, "session_id": "s1"},
        {**base, "session_id": "s2", "level": "ERROR", "latency_ms": 12.5, "status_code": 504},
        {**base, "session_id": "s1", "observed_timestamp": None},  # present but null: the slow path
        {**base, "session_id": "s1", "observed_timestamp": 0},
        {**base, "session_id": "s3", "observed_timestamp": T_MS * 1000 + 9},
        {**base, "session_id": ""},  # no session: derived from the transaction, user or service
        {**base, "transaction_id": "tx9"},
        {**base, "user_id": "u7", "endpoint": "/pay"},
        {**base, "session_id": "s4", "attributes": {"timeout": "1"}, "security_flags": ["sqli"]},
        {**base, "session_id": "s4", "attributes": {"other": "1"}, "message": "user 42 logged in"},
        {"event": "structlog line", "level": "info", "service": "a", "session_id": "s1"},
        {"level": 30, "time": T_MS, "msg": "pino line", "service": "a", "session_id": "s2"},
        [{**base, "session_id": f"b{i}"} for i in range(4)],
        [{**base, "session_id": "s1"}, {"service": "a", "message": "no level"}],
        {"service": "a", "message": "no level"},
        "just a string",
        {**base, "session_id": "s5", "message": "x" * 3000},  # beyond max_bytes: the slow path refuses
    ]
    out: list[RawMessage] = []
    offsets = [0] * 4
    for _ in range(n):
        p = rng.choice([0, 0, 1, 3])
        kind = rng.randrange(len(kinds) + 2)
        offsets[p] += 1
        ts = rng.choice([T_MS, None, -1])
        if kind == len(kinds):
            out.append(RawMessage("logs.raw", p, offsets[p], ts, None))
        elif kind == len(kinds) + 1:
            out.append(RawMessage("logs.raw", p, offsets[p], ts, b"{not json"))
        else:
            out.append(RawMessage("logs.raw", p, offsets[p], ts, orjson.dumps(kinds[kind])))
        if rng.random() < 0.03:
            out.append(_ErrorEvent("logs.raw", p, offsets[p], None, None))
    return out


def _route_all(polls: list[list[RawMessage]], native: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as patch:
        patch.setattr(stage_module, "_native", _ROUTE_C if native else None)
        if native:  # and only the C loop runs
            patch.setattr(IngestStage, "_route_py", None)
        # a line without any time gets the clock's: one instant for both runs
        patch.setattr(raw_module.time, "time_ns", lambda: T_MS * 1_000_000 + 123_456)
        decoder = RawDecoder(2048)
        stage = IngestStage(decoder, partitions=5, max_lines_per_message=3)
        seen = []
        for poll in polls:
            r = stage.route(poll)
            rejected = [(m.partition(), m.offset(), j.error_type, j.index, j.payload) for m, j in r.rejected]
            seen.append((r.values, rejected, r.lines, r.positions, r.starts, r.errors))
    counters = (stage.lines_in, stage.lines_out, stage.messages_in, stage.dlq_by_type, decoder.shapes)
    return seen, counters


def test_the_c_loop_routes_every_kind_of_message_as_the_python_form(monkeypatch: pytest.MonkeyPatch) -> None:
    if _ROUTE_C is None:
        unavailable("the C ingest loop is not built here (make native builds it)")
    rng = random.Random(7)
    polls = [_mixed_poll(rng, n) for n in (0, 1, 40, 400)]
    native = _route_all(polls, True, monkeypatch)
    python = _route_all(polls, False, monkeypatch)
    assert native == python
    seen, (lines_in, lines_out, _, dlq, shapes) = python  # type: ignore[misc]
    # the poll held every path: fast lines, other shapes, refusals, error events, full batches
    assert shapes["canonical"] > 100 and len(shapes) >= 3 and dlq and lines_out < lines_in
    assert any(errors for *_, errors in seen)
    assert max(len(values) for values, *_ in seen) >= 5  # every canonical partition got a message


class _Shadowed(RawMessage):
    """A record whose `value` an instance attribute replaces (a subclass without __slots__ has a
    __dict__), and whose `error` is a staticmethod: the C loop must call what a call by name calls."""

    @staticmethod
    def error() -> None:  # type: ignore[override]
        return None


def test_the_c_loop_calls_a_records_methods_as_a_call_by_name_would(monkeypatch: pytest.MonkeyPatch) -> None:
    if _ROUTE_C is None:
        unavailable("the C ingest loop is not built here (make native builds it)")
    line = {"service": "a", "level": "INFO", "message": "m", "timestamp": T_MS * 1000, "session_id": "s1"}
    poll: list[RawMessage] = []
    for i in range(6):
        msg = _Shadowed("logs.raw", 0, i, T_MS, b"{not json}")
        shadow = orjson.dumps({**line, "message": f"shadowed {i}"})
        msg.value = lambda shadow=shadow: shadow  # type: ignore[method-assign]
        poll.append(msg)
    poll.append(RawMessage("logs.raw", 1, 0, T_MS, orjson.dumps(line)))  # a type of its own between
    poll.append(_Shadowed("logs.raw", 1, 1, T_MS, orjson.dumps(line)))
    native = _route_all([poll], True, monkeypatch)
    assert native == _route_all([poll], False, monkeypatch)
    _, (lines_in, lines_out, *_) = native  # type: ignore[misc]
    assert lines_in == lines_out == 8  # the shadowed values were read, not the refused ones
