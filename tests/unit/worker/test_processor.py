"""RawProcessor: dead letters carry the reason and the source position; valid lines flow on."""

from __future__ import annotations

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.wire.deadletter import dlq_headers
from pipeline.wire.raw import RawDecoder, RawEncoder
from pipeline.wire.records import normalize
from pipeline.wire.sessions import encode_sessions
from pipeline.worker.processor import RawProcessor

T0 = 1_790_000_000_000_000
TID = "0123456789abcdef"


def rec(level: str, msg: str, session: str = "s1") -> dict[str, object]:
    return {"timestamp": T0, "service": "svc", "level": level, "message": msg, "session_id": session}


def test_whole_message_rejected_with_headers() -> None:
    proc = RawProcessor(Settings())
    out = proc.handle("logs.raw", 2, 17, b"\x01\x02 not a log")
    assert out.curated == {}
    [rej] = out.rejected
    assert rej.error_type == "not_json" and rej.index is None and rej.payload == b"\x01\x02 not a log"
    headers = dlq_headers(rej, "logs.raw", 2, 17)
    assert headers["hindsight.error_type"] == b"not_json"
    assert headers["hindsight.stage"] == b"decode"
    assert headers["hindsight.source_partition"] == b"2"
    assert headers["hindsight.source_offset"] == b"17"
    assert proc.dlq_records == 1 and proc.dlq_by_type == {"not_json": 1}


def test_bad_element_cut_out_of_batch_rest_processed() -> None:
    proc = RawProcessor(Settings())
    value = orjson.dumps(
        [rec("WARN", "kept"), {"service": "svc", "message": "no level"}, rec("INFO", "buffered")]
    )
    out = proc.handle("logs.raw", 0, 5, value)
    assert [r["message"] for r in out.curated["s1"]] == ["kept"]
    [rej] = out.rejected
    assert rej.index == 1 and rej.error_type == "missing_field"
    assert orjson.loads(rej.payload) == {"service": "svc", "message": "no level"}
    assert dlq_headers(rej, "logs.raw", 0, 5)["hindsight.source_index"] == b"1"


def test_avro_batch_lines_get_their_index() -> None:
    proc = RawProcessor(Settings())
    value = RawEncoder("avro").encode([normalize(rec("DEBUG", "d")), normalize(rec("ERROR", "e"))])
    out = proc.handle("logs.raw", 1, 9, value)
    assert [(r["raw_offset"], r["raw_index"], r["message"]) for r in out.curated["s1"]] == [
        (9, 0, "d"),
        (9, 1, "e"),
    ]


def test_lines_of_logs_sessions_are_buffered_encoded_and_decoded_when_emitted() -> None:
    """The worker buffers each canonical line as its bytes: the budget counts ~their size, not the
    ~1.7 KB of a record dict, and a trigger still emits the lines before it whole."""
    settings = Settings()
    proc = RawProcessor(settings)
    lines = []
    for i in range(200):
        line = normalize(rec("DEBUG", f"step {i} " + "x" * 150, session=f"s{i % 20}"))
        line["timestamp"] = T0 + i * 10_000
        lines.append({**line, "raw_topic": "logs.raw", "raw_partition": 0, "raw_offset": i, "raw_index": 0})
    values = [encode_sessions(lines[i : i + 50]) for i in range(0, 200, 50)]
    for offset, value in enumerate(values):
        assert proc.handle(settings.sessions_topic, 0, offset, value).curated == {}
    stats = proc.stats()
    encoded = sum(len(orjson.dumps(line)) for line in lines)
    assert stats.buffered_lines == 200
    assert encoded < stats.buffered_bytes <= 1.5 * encoded
    trigger = {
        **lines[-1],
        "level": "ERROR",
        "message": "boom",
        "raw_offset": 200,
        "timestamp": T0 + 2_000_000,
    }
    out = proc.handle(settings.sessions_topic, 0, 4, encode_sessions([trigger]))
    session = lines[-1]["session_id"]
    rows = out.curated[session]
    want = [line for line in lines if line["session_id"] == session] + [trigger]
    assert [(r["message"], r["raw_offset"]) for r in rows] == [(w["message"], w["raw_offset"]) for w in want]
    assert rows[0]["attributes"] == {} and rows[0]["severity_number"] == 5  # decoded with defaults


def _curated(out_rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    keys = ("raw_offset", "raw_index", "message", "trigger_reasons", "trigger_id", "rule_ids", "tags",
            "severity_number", "template_id")  # fmt: skip
    return sorted(tuple(str(r.get(k)) for k in keys) for r in out_rows)


def test_lines_of_logs_sessions_read_as_structs_emit_what_records_do() -> None:
    """The worker hands logs.sessions' validated structs to the engine (no dict per line); the same
    lines given as records (logs.raw's path) emit the same rows: triggers, follow-ups, captures by a
    rule, tags, drops and the dynamic level, and the same stats."""
    from pipeline.ops.workload import generate
    from pipeline.rules.compiled import RuleSet
    from pipeline.rules.model import validate_rule

    work = generate(sessions=60, requests_per_session=6, seed=11)
    tag = {
        "id": "tag-pay",
        "match": {"all": [{"endpoint": "/api/cart"}]},
        "actions": {"tag": {"tags": ["pay"]}},
    }
    capture = {"scope": "user", "lookback_s": 5, "follow_s": 5}
    cap = {
        "id": "cap-user",
        "match": {"all": [{"message_regex": "^upstream"}]},
        "actions": {"capture": capture},
    }
    info = {"id": "keep-info", "match": {"all": [{"service": "checkout"}]}, "actions": {"level": "INFO"}}
    rules = RuleSet([validate_rule(tag), validate_rule(cap), validate_rule(info)])
    outputs = []
    for path in ("raw", "sessions"):
        settings = Settings()
        proc = RawProcessor(settings)
        proc.set_rules(rules)
        rows: list[dict[str, object]] = []
        stats: list[object] = []
        for offset in range(0, len(work.lines), 40):
            batch = work.lines[offset : offset + 40]
            if path == "raw":
                out = proc.handle("logs.raw", 0, offset, orjson.dumps(batch))
            else:
                lines = [{**normalize(dict(rec)), "raw_topic": "logs.raw", "raw_partition": 0,
                          "raw_offset": offset, "raw_index": i} for i, rec in enumerate(batch)]  # fmt: skip
                out = proc.handle(settings.sessions_topic, 0, offset, encode_sessions(lines))
            rows.extend(r for batch_rows in out.curated.values() for r in batch_rows)  # type: ignore[misc]
            stats.extend(out.stats)
        rows.extend(
            r
            for batch_rows in proc.tick(
                max(r["timestamp"] for r in work.lines) + 3_600_000_000
            ).curated.values()
            for r in batch_rows
        )  # type: ignore[misc]
        outputs.append((_curated(rows), proc.stats().windows))
    (raw_rows, raw_m), (ses_rows, ses_m) = outputs
    assert len(raw_rows) > 50 and raw_rows == ses_rows
    reasons = {reason for row in raw_rows for reason in row[3].strip("[]").replace("'", "").split(", ")}
    assert {"error", "latency", "slow_session", "rule:cap-user", "rule:keep-info"} <= reasons
    assert any("pay" in row[6] for row in raw_rows) and any("keep-info" in row[5] for row in raw_rows)
    assert (raw_m.lines_in, raw_m.lines_emitted, raw_m.triggers, dict(raw_m.by_reason)) == (
        ses_m.lines_in, ses_m.lines_emitted, ses_m.triggers, dict(ses_m.by_reason))  # fmt: skip


def test_quiet_lines_of_logs_sessions_never_become_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's speed rests on this: a line that cannot trigger, match a rule or be kept is read
    from its struct and buffered as bytes; only lines the engine keeps are turned into records."""
    from pipeline.wire import sessions

    calls: list[int] = []
    to_record = sessions._Line.record

    def counted(self: sessions._Line) -> dict[str, object]:
        calls.append(self.raw_offset)
        return to_record(self)  # type: ignore[return-value]

    monkeypatch.setattr(sessions._Line, "record", counted)
    settings = Settings()
    proc = RawProcessor(settings)
    quiet = [
        {**normalize(rec("DEBUG", f"step {i}", session=f"s{i % 5}")), "timestamp": T0 + i * 1000,
         "raw_topic": "logs.raw", "raw_partition": 0, "raw_offset": i, "raw_index": 0}
        for i in range(100)
    ]  # fmt: skip
    for start in range(0, 100, 25):
        assert (
            proc.handle(settings.sessions_topic, 0, start, encode_sessions(quiet[start : start + 25])).curated
            == {}
        )
    assert calls == [0]  # the first line of the one template ("step <*>") is learned; the rest are quiet
    calls.clear()
    boom = {**quiet[-1], "level": "ERROR", "message": "boom", "raw_offset": 100, "timestamp": T0 + 200_000}
    out = proc.handle(settings.sessions_topic, 0, 100, encode_sessions([boom]))
    assert len(out.curated["s4"]) == 21  # its session's 20 quiet lines and the error, decoded when kept
    assert set(calls) == {row["raw_offset"] for row in out.curated["s4"]}  # only the lines kept


def _framed_workload(seed: int) -> list[bytes]:
    """A workload as ingest frames it: single-line raw messages from 4 raw partitions, many sessions
    a message, with security flags and timeout attributes on some lines."""
    from pipeline.ingest.stage import IngestStage, RawMessage
    from pipeline.ops.workload import generate
    from pipeline.wire.raw import RawDecoder

    work = generate(sessions=80, requests_per_session=6, seed=seed)
    raw = []
    for i, line in enumerate(work.lines):
        line = dict(line)
        if i % 97 == 0:
            line["attributes"] = {**line.get("attributes", {}), "timeout": "1"}  # type: ignore[dict-item]
        raw.append(RawMessage("logs.raw", i % 4, i // 4, None, orjson.dumps(line)))
    stage = IngestStage(RawDecoder(1 << 20), partitions=1, max_lines_per_message=300)
    return [v for start in range(0, len(raw), 500) for v in stage.route(raw[start : start + 500]).values[0]]


def test_framed_messages_emit_what_the_same_lines_unframed_do() -> None:
    """Ingest frames each logs.sessions message with the engine's columns; the worker then decodes a
    line only if it may matter. The same messages without their frame (read line by line, as
    structs) give the same rows, statistics and counters, with rules of every kind in force."""
    from pipeline.rules.compiled import RuleSet
    from pipeline.rules.model import validate_rule
    from pipeline.wire.frames import is_framed, unframed

    values = _framed_workload(seed=12)
    assert all(is_framed(v) for v in values) and len(values) > 10
    rules = RuleSet([
        validate_rule({"id": "tag-cart", "match": {"all": [{"endpoint": "/api/cart"}]},
                       "actions": {"tag": {"tags": ["cart"]}}}),
        validate_rule({"id": "cap-user", "match": {"all": [{"message_regex": "^upstream"}]},
                       "actions": {"capture": {"scope": "user", "lookback_s": 5, "follow_s": 5}}}),
        validate_rule({"id": "keep-info", "match": {"all": [{"service": "checkout"}]},
                       "actions": {"level": "INFO"}}),
    ])  # fmt: skip
    outputs = []
    for framed in (True, False):
        for with_rules in (True, False):
            settings = Settings()
            proc = RawProcessor(settings)
            if with_rules:
                proc.set_rules(rules)
            rows: list[dict[str, object]] = []
            stats: list[object] = []
            for offset, value in enumerate(values):
                out = proc.handle(settings.sessions_topic, 0, offset, value if framed else unframed(value))
                assert not out.rejected
                rows.extend(r for batch_rows in out.curated.values() for r in batch_rows)  # type: ignore[misc]
                stats.extend(out.stats)
            end = proc.tick(T0 * 2)
            rows.extend(r for batch_rows in end.curated.values() for r in batch_rows)  # type: ignore[misc]
            stats.extend(end.stats)
            m = proc.stats()
            outputs.append((_curated(rows), sorted(map(str, stats)), m.windows, m.buffered_bytes))
    for with_rules in (0, 1):
        f_rows, f_stats, f_m, f_bytes = outputs[with_rules]
        p_rows, p_stats, p_m, _ = outputs[2 + with_rules]
        assert len(f_rows) > 50 and f_rows == p_rows and f_stats == p_stats
        assert (f_m.lines_in, f_m.lines_emitted, f_m.triggers, dict(f_m.by_reason)) == (
            p_m.lines_in, p_m.lines_emitted, p_m.triggers, dict(p_m.by_reason))  # fmt: skip
        assert f_bytes > 0
    reasons = {reason for row in outputs[0][0] for reason in row[3].strip("[]").replace("'", "").split(", ")}
    assert {"error", "latency", "timeout", "rule:cap-user", "rule:keep-info"} <= reasons
    assert any("cart" in row[6] for row in outputs[0][0])


def test_quiet_lines_of_a_frame_are_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame's point: a line that cannot trigger, match a rule or be kept stays bytes; the lines
    a trigger keeps are decoded when it fires, and no others."""
    from pipeline.ingest.stage import IngestStage, RawMessage
    from pipeline.wire import frames

    stage = IngestStage(RawDecoder(1 << 20), partitions=1)
    settings = Settings()
    proc = RawProcessor(settings)
    decoded: list[str] = []
    bare_line = frames.bare_line

    def counted(line: bytes) -> dict[str, object]:
        got = bare_line(line)
        decoded.append(got["message"])
        return got  # type: ignore[return-value]

    monkeypatch.setattr(frames, "bare_line", counted)
    quiet = [
        RawMessage("logs.raw", 0, i, None, orjson.dumps(
            {**rec("DEBUG", f"step {i}", session=f"s{i % 5}"), "timestamp": T0 + i * 1000}))
        for i in range(100)
    ]  # fmt: skip
    for start in range(0, 100, 25):
        [value] = stage.route(quiet[start : start + 25]).values[0]
        assert proc.handle(settings.sessions_topic, 0, start, value).curated == {}
    assert decoded == ["step 0"]  # the first line of the one template ("step <*>") is learned; the rest quiet
    decoded.clear()
    boom = {**rec("ERROR", "boom", session="s4"), "timestamp": T0 + 200_000}
    [value] = stage.route([RawMessage("logs.raw", 0, 100, None, orjson.dumps(boom))]).values[0]
    out = proc.handle(settings.sessions_topic, 0, 100, value)
    assert len(out.curated["s4"]) == 21  # its session's 20 quiet lines and the error, decoded when kept
    kept = [row["message"] for row in out.curated["s4"]]
    # only the lines kept: each buffered one once, the trigger's own for its reasons, its id and its row
    assert sorted(decoded) == sorted([*kept, "boom", "boom"])


def test_a_frame_with_a_line_ingest_did_not_write_is_dead_lettered() -> None:
    from pipeline.wire.frames import FramedLine, encode_framed

    settings = Settings()
    proc = RawProcessor(settings)
    good = orjson.dumps(normalize(rec("INFO", "fine")))
    lines: list[FramedLine] = [
        ("s1", T0, "INFO", "svc", None, None, None, None, 0, TID, 4, "logs.raw", 0, 1, 0, None, good),
        ("s1", T0 + 1, "ERROR", "svc", None, None, None, None, 0, TID, 4, "logs.raw", 0, 2, 0, None, b"{}"),
    ]  # fmt: skip
    out = proc.handle(settings.sessions_topic, 0, 7, encode_framed(lines, "timeout"))
    [rej] = out.rejected
    assert rej.error_type == "bad_sessions" and "not a logs.sessions line" in rej.reason
