"""Serde: Avro single-object and batch round trips, interop with the official avro library, bad input."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import avro.io
import avro.schema
import msgspec
import orjson
import pytest

from pipeline.errors import ConfigError
from pipeline.types import Level
from pipeline.wire import avro as wire_avro
from pipeline.wire import curated, raw
from pipeline.wire.raw import RawDecoder, RawEncoder
from pipeline.wire.records import normalize
from pipeline.wire.registry import SchemaRegistry

NOW_US = 1_790_000_000_000_000


def line(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "timestamp": NOW_US,
        "service": "checkout",
        "level": "INFO",
        "message": "order placed",
        "session_id": "s-1",
        "user_id": "u-1",
        "endpoint": "/api/checkout",
        "latency_ms": 12.5,
        "status_code": 200,
        "security_flags": ["sqli-suspect"],
        "attributes": {"region": "eu"},
    }
    base.update(over)
    return base


def test_avro_single_object_round_trip() -> None:
    record = normalize(line())
    value = RawEncoder("avro").encode([record])
    assert value[:2] == b"\xc3\x01"
    records, errors = RawDecoder(1 << 20).decode(value)
    assert errors == []
    assert records == [record]


def test_avro_batch_round_trip_keeps_order() -> None:
    batch = [normalize(line(message=f"m{i}", timestamp=NOW_US + i)) for i in range(50)]
    value = RawEncoder("avro").encode(batch)
    assert wire_avro.schemas()["LogBatch"].header == value[:10]
    records, errors = RawDecoder(1 << 20).decode(value)
    assert errors == []
    assert [r["message"] for r in records] == [f"m{i}" for i in range(50)]


def test_official_avro_library_decodes_single_object_encoding() -> None:
    """Any Avro library can read what we write: header = C3 01 + CRC-64-AVRO of the canonical form."""
    record = normalize(line(level="ERROR", attributes={"k": "v"}))
    value = RawEncoder("avro").encode([record])
    definition = json.loads((wire_avro.SCHEMA_DIR / "log_record.avsc").read_text())
    # The avro package keeps logicalType in its canonical form (the spec strips it); parse without it
    # so its fingerprint follows the spec like Java's and fastavro's do.
    parsed = avro.schema.parse(json.dumps(wire_avro.strip_logical(definition)))
    assert value[2:10] == parsed.fingerprint("CRC-64-AVRO")
    datum = avro.io.DatumReader(parsed).read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))
    assert datum["message"] == record["message"]
    assert datum["level"] == "ERROR"
    assert datum["timestamp"] == NOW_US
    assert datum["attributes"] == {"k": "v"}


def test_crc64_avro_matches_reference_implementation() -> None:
    for text in ('"int"', '"string"', '{"type":"fixed","name":"f","size":4}'):
        parsed = avro.schema.parse(text)
        assert wire_avro.crc64_avro(parsed.canonical_form.encode()) == parsed.fingerprint("CRC-64-AVRO")


def test_json_object_and_array() -> None:
    dec = RawDecoder(1 << 20)
    one, errors = dec.decode(orjson.dumps(line()))
    assert errors == [] and one[0]["service"] == "checkout" and one[0]["severity_number"] == Level.INFO.value
    many, errors = dec.decode(orjson.dumps([line(message="a"), line(message="b")]))
    assert errors == [] and [r["message"] for r in many] == ["a", "b"]


def test_json_aliases_levels_and_timestamps() -> None:
    rec = normalize(
        {
            "@timestamp": "2026-05-01T10:00:00Z",
            "service.name": "api",
            "severity": "warning",
            "msg": "hi",
            "http.route": "/x",
            "extra": {"a": 1},
        }
    )
    assert rec["level"] == "WARN"
    assert rec["endpoint"] == "/x"
    assert rec["timestamp"] == 1_777_629_600_000_000
    assert rec["attributes"]["extra"] == '{"a":1}'
    assert normalize(line(timestamp=1_790_000_000))["timestamp"] == 1_790_000_000_000_000  # seconds
    assert normalize(line(timestamp=1_790_000_000_123))["timestamp"] == 1_790_000_000_123_000  # millis
    assert normalize(line(level=17))["level"] == "ERROR"  # OTel severity number
    assert normalize(line(user_id=42))["user_id"] == "42"


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (b"", "empty"),
        (b"\x07\x13binary garbage", "not_json"),
        (b"{truncated", "not_json"),
        (b'{"service": "a", "level": "INFO", "message": "\xff\xfe"}', "invalid_utf8"),
        (orjson.dumps({"level": "INFO", "message": "m"}), "missing_field"),
        (orjson.dumps({"service": "a", "message": "m"}), "missing_field"),
        (orjson.dumps({"service": 5, "level": "INFO", "message": "m"}), "wrong_type"),
        (orjson.dumps(line(level="LOUD")), "wrong_type"),
        (orjson.dumps(line(latency_ms="slow")), "wrong_type"),
        (orjson.dumps(line(status_code=True)), "wrong_type"),
        (orjson.dumps(line(security_flags="x")), "wrong_type"),
        (orjson.dumps(line(attributes=[1])), "wrong_type"),
        (orjson.dumps(line(timestamp=-5)), "bad_timestamp"),
        (orjson.dumps(line(timestamp="3020-01-01T00:00:00Z")), "bad_timestamp"),
        (orjson.dumps(line(timestamp="yesterday")), "wrong_type"),
        (orjson.dumps("just a string"), "wrong_type"),
        (orjson.dumps([]), "empty"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown_schema"),
        (b"\x00\x00\x00\x00\x01\x02", "unknown_schema"),
        (b"[" * 5000 + b"]" * 5000, "not_json"),
    ],
)
def test_bad_input_is_classified(value: bytes, error_type: str) -> None:
    records, errors = RawDecoder(1 << 20).decode(value)
    assert records == []
    assert [(i, e.error_type) for i, e in errors] == [(None, error_type)]


def test_truncated_avro_is_bad_avro() -> None:
    value = RawEncoder("avro").encode([normalize(line()), normalize(line())])
    records, errors = RawDecoder(1 << 20).decode(value[: len(value) // 2])
    assert records == [] and errors[0][1].error_type == "bad_avro"


def test_too_large() -> None:
    value = orjson.dumps(line(message="x" * 5000))
    records, errors = RawDecoder(2048).decode(value)
    assert records == [] and errors[0][1].error_type == "too_large"


def test_one_bad_element_does_not_lose_the_rest() -> None:
    value = orjson.dumps([line(message="good1"), {"service": "x", "level": "INFO"}, line(message="good2")])
    records, errors = RawDecoder(1 << 20).decode(value)
    assert [r["message"] for r in records] == ["good1", "good2"]
    assert [(i, e.error_type) for i, e in errors] == [(1, "missing_field")]


def test_json_wire_format_is_plain_json() -> None:
    value = RawEncoder("json").encode([normalize(line())])
    assert orjson.loads(value)["message"] == "order placed"


def test_curated_round_trip_and_schema_superset() -> None:
    raw_fields = {f["name"]: f["type"] for f in wire_avro.schemas()["LogRecord"].definition["fields"]}
    cur_fields = {f["name"]: f["type"] for f in wire_avro.schemas()["CuratedRecord"].definition["fields"]}
    for name, typ in raw_fields.items():
        assert name in cur_fields, name
        if name != "level":  # the enum is defined once and referenced by name in curated
            assert cur_fields[name] == typ, name
    from pipeline.engine.curate import curate
    from pipeline.types import RawLine

    raw = RawLine(normalize(line()), "logs.raw", 2, 41, 3)
    record = curate(raw, ["error"], raw, 30)
    assert curated.decode_curated(curated.encode_curated([record, record])) == [record, record]


def test_curated_json_from_another_tool_is_validated() -> None:
    good = {**normalize(line()), "raw_topic": "logs.raw", "raw_partition": 0, "raw_offset": 7}
    assert curated.decode_curated(orjson.dumps(good))[0]["raw_offset"] == 7
    with pytest.raises(raw.DecodeError):
        curated.decode_curated(orjson.dumps({**good, "raw_offset": "seven"}))


def test_curated_json_and_avro_decode_to_the_same_rows() -> None:
    from pipeline.engine.curate import curate
    from pipeline.types import RawLine

    raw = RawLine(normalize(line(latency_ms=12, attributes={"k": "v"})), "logs.raw", 2, 41, 3)
    record = curate(raw, ["latency"], raw, 30)
    as_json = curated.encode_curated([record, record], "json")
    assert orjson.loads(as_json)[0]["raw_offset"] == 41
    assert curated.decode_curated(as_json) == curated.decode_curated(curated.encode_curated([record, record]))


def test_curated_json_reader_follows_the_avro_schema() -> None:
    """The JSON reader built from the .avsc has its fields, defaults and required fields, and fills a
    minimal record exactly as the Avro round trip does."""
    fields = wire_avro.schemas()["CuratedRecord"].definition["fields"]
    struct_fields = {f.name: f for f in msgspec.structs.fields(curated._CuratedJson)}
    assert list(struct_fields) != [] and set(struct_fields) == {f["name"] for f in fields}
    for f in fields:
        sf = struct_fields[f["name"]]
        if "default" in f:
            got = sf.default_factory() if sf.default_factory is not msgspec.NODEFAULT else sf.default
            assert got == f["default"], f["name"]
        else:
            assert sf.required, f["name"]
    minimal = {"timestamp": 1, "service": "s", "level": "INFO", "message": "m", "raw_topic": "t",
               "raw_partition": 0, "raw_offset": 0}  # fmt: skip
    avro_filled = curated.decode_curated(curated.encode_curated([minimal]))  # type: ignore[list-item]
    assert curated.decode_curated(orjson.dumps(minimal)) == avro_filled


@pytest.mark.parametrize(
    "change",
    [{"raw_partition": 2**31}, {"level": "LOUD"}, {"attributes": {"k": 1}}, {"latency_ms": "9"}],
)
def test_curated_json_rejects_what_avro_would(change: dict[str, Any]) -> None:
    good = {**normalize(line()), "raw_topic": "logs.raw", "raw_partition": 0, "raw_offset": 7}
    with pytest.raises(raw.DecodeError) as info:
        curated.decode_curated(orjson.dumps({**good, **change}))
    assert info.value.error_type == "wrong_type"
    with pytest.raises(raw.DecodeError) as info:
        curated.decode_curated(b"[{")
    assert info.value.error_type == "not_json"


class _Registry(BaseHTTPRequestHandler):
    """A Confluent-compatible registry speaking the two calls the client makes (real HTTP); it wants
    basic auth when `auth` is set, and records each request's Authorization header."""

    schemas: dict[int, str] = {}
    auth: str | None = None
    seen_auth: list[str | None] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization")
        self.seen_auth.append(given)
        if self.auth is None or given == "Basic " + base64.b64encode(self.auth.encode()).decode():
            return True
        data = b'{"error_code": 40101, "message": "Unauthorized"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return False

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._authorized():
            return
        schema_id = 100 + len(self.schemas)
        self.schemas[schema_id] = body["schema"]
        self._json({"id": schema_id})

    def do_GET(self) -> None:
        if not self._authorized():
            return
        schema_id = int(self.path.split("?")[0].rsplit("/", 1)[1])
        self._json({"schema": self.schemas[schema_id]})


def test_schema_registry_framing_round_trip() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        value = RawEncoder("confluent", SchemaRegistry(url), "logs.raw").encode(
            [normalize(line()), normalize(line())]
        )
        assert value[0] == 0
        schema_id = struct.unpack(">I", value[1:5])[0]
        assert schema_id in _Registry.schemas
        # a fresh reader knows nothing: it must fetch the writer schema by id
        records, errors = RawDecoder(1 << 20, SchemaRegistry(url)).decode(value)
        assert errors == [] and len(records) == 2
    finally:
        server.shutdown()
    with pytest.raises(ConfigError):
        RawEncoder("confluent", None)


def test_schema_registry_with_basic_auth() -> None:
    """confluent-kafka's registry client sends the configured user:password; without them the
    registry's refusal is a clear dead-letter reason."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Registry.auth = "svc:pa55"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        value = RawEncoder("confluent", SchemaRegistry(url, basic_auth="svc:pa55"), "logs.raw").encode(
            [normalize(line())]
        )
        records, errors = RawDecoder(1 << 20, SchemaRegistry(url, basic_auth="svc:pa55")).decode(value)
        assert errors == [] and len(records) == 1
        records, errors = RawDecoder(1 << 20, SchemaRegistry(url)).decode(value)
        [(_, error)] = errors
        assert records == [] and error.error_type == "unknown_schema" and "Unauthorized" in error.detail
        assert "Basic " + base64.b64encode(b"svc:pa55").decode() in _Registry.seen_auth
    finally:
        _Registry.auth = None
        server.shutdown()


@pytest.mark.parametrize(
    "obj",
    [
        {"timestamp": 1_790_000_000_000_000, "service": "a", "level": "INFO", "message": "short form"},
        {
            "timestamp": 1_790_000_000_000_000,
            "observed_timestamp": 1_790_000_000_000_100,
            "service": "a",
            "level": "ERROR",
            "severity_number": 18,
            "message": "full form",
            "session_id": "s",
            "user_id": "u",
            "endpoint": "/e",
            "transaction_id": None,
            "trace_id": "t",
            "span_id": None,
            "latency_ms": 12,
            "status_code": 500,
            "security_flags": ["sqli"],
            "attributes": {"k": "v"},
        },
    ],
)
def test_canonical_fast_path_equals_lenient_path(obj: dict[str, Any]) -> None:
    now = 1_790_000_000_000_500
    fast = raw._canonical_json(orjson.dumps([obj, obj]), now)
    assert fast is not None and len(fast) == 2
    assert fast[0] == normalize(dict(obj), now)
    assert type(fast[0]["latency_ms"]) is (float if obj.get("latency_ms") is not None else type(None))


@pytest.mark.parametrize(
    "obj",
    [
        {"timestamp": 1_790_000_000_000_000, "service": "a", "level": "info", "message": "m"},  # alias case
        {"timestamp": 1_790_000_000, "service": "a", "level": "INFO", "message": "m"},  # seconds
        {"timestamp": 1_790_000_000_000_000, "service": "a", "level": "INFO", "message": "m", "cart": 3},
        {"timestamp": 1_790_000_000_000_000, "service": "a", "level": "INFO", "message": "m", "user_id": 7},
    ],
)
def test_other_shapes_take_the_lenient_path_and_lose_nothing(obj: dict[str, Any]) -> None:
    assert raw._canonical_json(orjson.dumps(obj), 0) is None
    records, errors = RawDecoder(1 << 20).decode(orjson.dumps(obj))
    assert errors == [] and records[0] == normalize(dict(obj), records[0]["observed_timestamp"])


def test_decode_where_selects_like_decode_then_filter() -> None:
    import orjson

    from pipeline.wire.raw import RawDecoder, Where

    decoder = RawDecoder(1 << 20)
    t0 = 1_790_000_000_000_000
    lines = [
        {"timestamp": t0 + i, "service": "s", "level": "INFO", "message": f"m{i}", "endpoint": f"/e{i % 3}"}
        for i in range(30)
    ]
    where = Where(t0 + 5, t0 + 25, (("endpoint", "/e1"),))
    canonical = orjson.dumps(lines)
    lenient = orjson.dumps(
        [{**line, "msg": line["message"]} if i == 0 else line for i, line in enumerate(lines)]
    )
    lenient = lenient.replace(b'"message":"m0",', b"", 1)  # the alias forces the lenient path
    with_bad = orjson.dumps([*lines[:10], {"service": "s"}, *lines[10:]])  # a bad element at position 10
    for value in (canonical, lenient, with_bad):
        records, errors = decoder.decode(value)
        from pipeline.wire.raw import good_positions

        positions = good_positions(records, errors)
        want = [(r, p) for r, p in zip(records, positions, strict=True) if where.dict_test()(r)]
        got, got_positions, count = decoder.decode_where(value, where)
        assert [r["message"] for r in got] == [r["message"] for r, _ in want]
        assert got_positions == [p for _, p in want]
        assert count == len(records)

        # complete records, the same as decode() gives (observed_timestamp is "now" when absent)
        def same(r: dict[str, object]) -> dict[str, object]:
            return {k: v for k, v in r.items() if k != "observed_timestamp"}

        assert [same(dict(r)) for r in got] == [same(dict(r)) for r, _ in want]
    # two conditions, and no condition at all
    both = Where(t0, t0 + 30, (("endpoint", "/e2"), ("service", "s")))
    assert len(decoder.decode_where(canonical, both)[0]) == 10
    assert len(decoder.decode_where(canonical, Where(t0, t0 + 30))[0]) == 30
    assert decoder.decode_where(b"\x07 garbage", where) == ([], [], 0)
