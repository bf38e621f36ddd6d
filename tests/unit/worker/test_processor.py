"""RawProcessor: dead letters carry the reason and the source position; valid lines flow on."""

from __future__ import annotations

import orjson

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
