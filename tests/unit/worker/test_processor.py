"""RawProcessor: dead letters carry the reason and the source position; valid lines flow on."""

from __future__ import annotations

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.wire.deadletter import dlq_headers
from pipeline.wire.raw import RawEncoder
from pipeline.wire.records import normalize
from pipeline.wire.sessions import encode_sessions
from pipeline.worker.processor import RawProcessor

T0 = 1_790_000_000_000_000


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
