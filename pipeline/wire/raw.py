"""The wire formats of logs.raw: JSON objects, arrays and common aliases normalised into log records;
Avro single-object and schema-registry framing; the decoder (per-record dead letters) and encoder."""

from __future__ import annotations

import operator
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.types import LogRecord
from pipeline.wire.avro import SINGLE_OBJECT_MAGIC, avro_objects, by_fingerprint, schemas
from pipeline.wire.otlp import JSON, PROTOBUF, OtlpError, map_request, parse_request
from pipeline.wire.records import _LEVEL_NAMES, MAX_TS_US, MIN_TS_US, normalize
from pipeline.wire.registry import SchemaRegistry
from pipeline.wire.shapes import DEFAULT_FIELD_MAP, FieldMap, adapt_shape, apply_field_map

CONFLUENT_MAGIC = 0
_JSON_START = frozenset(b"[{ \t\r\n")
_OTLP_PROTO_START = 0x0A  # ExportLogsServiceRequest field 1 (resource_logs), length-delimited
_asdict = msgspec.structs.asdict


_Micros = Annotated[int, msgspec.Meta(ge=MIN_TS_US, lt=MAX_TS_US)]


@dataclass(frozen=True)
class Where:
    """A line selection for scans: event time in [since_us, until_us) and exact field values."""

    since_us: int
    until_us: int
    equals: tuple[tuple[str, str], ...] = ()

    def struct_test(self) -> Callable[[Any], bool]:
        since, until, equals = self.since_us, self.until_us, self.equals
        if len(equals) == 1:  # the common case (one endpoint, user or session) without a loop
            ((name, want),) = equals
            getter = operator.attrgetter(name)
            return lambda s: since <= s.timestamp < until and getter(s) == want

        def test(s: Any) -> bool:
            return since <= s.timestamp < until and all(getattr(s, k) == v for k, v in equals)

        return test

    def dict_test(self) -> Callable[[LogRecord], bool]:
        since, until, equals = self.since_us, self.until_us, self.equals

        def test(rec: LogRecord) -> bool:
            fields = cast(dict[str, Any], rec)
            return since <= rec["timestamp"] < until and all(fields.get(k) == v for k, v in equals)

        return test


class _Canonical(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The canonical JSON shape, validated by msgspec in C; anything else takes the lenient path."""

    timestamp: _Micros
    service: str
    level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
    message: str
    observed_timestamp: _Micros | None = None
    severity_number: Annotated[int, msgspec.Meta(ge=0, le=24)] | None = None
    session_id: str | None = None
    user_id: str | None = None
    endpoint: str | None = None
    transaction_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    latency_ms: float | None = None
    status_code: int | None = None
    security_flags: list[str] = msgspec.field(default_factory=list)
    attributes: dict[str, str] = msgspec.field(default_factory=dict)


_CANONICAL_JSON = msgspec.json.Decoder(list[_Canonical] | _Canonical)
_CANONICAL_ONE = msgspec.json.Decoder(_Canonical)
# the decoder canonical_object wraps and what it raises for a value that is not one canonical object
# (ingest's C loop calls it directly: a Python wrapper per line costs ~0.1 us)
CANONICAL_OBJECT = _CANONICAL_ONE
CANONICAL_TYPE = _Canonical  # what it returns (the C loop reads the fields from their slots)
CANONICAL_DECLINED = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)


def canonical_object(value: bytes) -> _Canonical | None:
    """A value that is one canonical JSON object, validated in C (no dict is built); else None."""
    if value[:1] != b"{":
        return None
    try:
        return _CANONICAL_ONE.decode(value)
    except CANONICAL_DECLINED:
        return None


def _canonical_json(value: bytes, now_us: int) -> list[LogRecord] | None:
    """Decode and validate a JSON line or batch of canonical lines in one C pass; None if it is not."""
    try:
        decoded = _CANONICAL_JSON.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None  # the lenient path classifies it (or accepts it)
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items:
        return None
    return _records_of(items, now_us)


def _records_of(items: Iterable[_Canonical], now_us: int) -> list[LogRecord]:
    """Canonical structs as complete records (defaults that depend on the time or the level filled)."""
    records: list[LogRecord] = []
    for item in items:
        rec = cast(LogRecord, _asdict(item))
        if item.observed_timestamp is None:
            rec["observed_timestamp"] = now_us
        if not item.severity_number:
            rec["severity_number"] = _LEVEL_NAMES[item.level]
        records.append(rec)
    return records


# ----------------------------------------------------------------------------------------------
# Raw topic
# ----------------------------------------------------------------------------------------------


class RawDecoder:
    """Decodes one logs.raw value into LogRecords and per-line rejections; never raises on bad input.

    Accepts the canonical JSON shape (one object or an array, validated in C), any shape of
    pipeline.wire.shapes (shippers and logging libraries) through the lenient path, newline-delimited
    JSON, Avro single-object, schema-registry framing, and OTLP ExportLogsServiceRequests as the
    OpenTelemetry Collector's Kafka exporter writes them (otlp_proto, otlp_json). A line without a
    timestamp takes `timestamp_us` (the Kafka record's time), so every redelivery decodes it the same.
    `shapes` counts decoded lines per shape.
    """

    def __init__(
        self, max_bytes: int, registry: SchemaRegistry | None = None, field_map: FieldMap = DEFAULT_FIELD_MAP
    ) -> None:
        self.max_bytes = max_bytes
        self.registry = registry
        self.field_map = field_map
        self.shapes: dict[str, int] = {}

    def _count(self, shape: str, n: int = 1) -> None:
        self.shapes[shape] = self.shapes.get(shape, 0) + n

    def decode(
        self, value: bytes | None, timestamp_us: int | None = None
    ) -> tuple[list[LogRecord], list[tuple[int | None, DecodeError]]]:
        """Return (records, [(index or None for the whole message, error)])."""
        now_us = timestamp_us if timestamp_us is not None else time.time_ns() // 1000
        if value and value[0] in _JSON_START and len(value) <= self.max_bytes:
            fast = _canonical_json(value, now_us)
            if fast is not None:
                self._count("canonical", len(fast))
                return fast, []
        if value and len(value) <= self.max_bytes and (_is_otlp_proto(value) or _is_otlp_json(value)):
            otlp = self._otlp(value, now_us)
            if otlp is not None:
                return otlp
        try:
            objects = self._objects(value)
        except DecodeError as exc:
            return [], [(None, exc)]
        records: list[LogRecord] = []
        errors: list[tuple[int | None, DecodeError]] = []
        fmap = self.field_map
        for index, obj in enumerate(objects):
            try:
                if isinstance(obj, UnparsedLine):
                    raise obj.error
                shape = "canonical"
                if type(obj) is dict:
                    published = obj
                    if fmap.presets:
                        shape, obj = adapt_shape(obj)
                    obj = apply_field_map(obj, fmap, published)
                records.append(normalize(obj, now_us))
                self._count(shape)
            except DecodeError as exc:
                errors.append((index if len(objects) > 1 else None, exc))
        return records, errors

    def _otlp(
        self, value: bytes, now_us: int
    ) -> tuple[list[LogRecord], list[tuple[int | None, DecodeError]]] | None:
        """An OTLP logs request (the Collector's Kafka exporter); None if the value is not one."""
        is_json = value[0] != _OTLP_PROTO_START
        try:
            request = parse_request(value, JSON if is_json else PROTOBUF)
        except OtlpError as exc:
            if is_json:
                return [], [(None, DecodeError("bad_otlp", str(exc)))]
            return None  # not protobuf after all: the other decoders say what it is
        mapped = map_request(request, now_us)
        if not mapped.records and not mapped.rejected:
            return None if not is_json else ([], [(None, DecodeError("empty", "OTLP request without logs"))])
        self._count("otlp_json" if is_json else "otlp_proto", len(mapped.records))
        total = len(mapped.records) + len(mapped.rejected)
        errors: list[tuple[int | None, DecodeError]] = [
            (at if total > 1 else None, DecodeError(kind, reason, payload))
            for at, (kind, reason, payload) in zip(mapped.rejected_at, mapped.rejected, strict=True)
        ]
        return mapped.records, errors

    def decode_where(
        self, value: bytes | None, where: Where, timestamp_us: int | None = None
    ) -> tuple[list[LogRecord], list[int], int]:
        """Only the lines `where` selects, with their positions, and how many usable lines the message
        held; unusable lines are left out (a scan reads what the worker already dead-lettered). On
        canonical JSON the test runs on msgspec's structs: lines that do not match never become dicts."""
        if value and value[0] in _JSON_START and len(value) <= self.max_bytes:
            try:
                decoded = _CANONICAL_JSON.decode(value)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
                decoded = None
            if decoded is not None:
                items = decoded if isinstance(decoded, list) else [decoded]
                keep = where.struct_test()
                picked = [(i, item) for i, item in enumerate(items) if keep(item)]
                if not picked:
                    return [], [], len(items)
                now_us = timestamp_us if timestamp_us is not None else time.time_ns() // 1000
                records = _records_of((item for _, item in picked), now_us)
                return records, [i for i, _ in picked], len(items)
        all_records, errors = self.decode(value, timestamp_us)
        positions = good_positions(all_records, errors)
        test = where.dict_test()
        kept = [(rec, pos) for rec, pos in zip(all_records, positions, strict=True) if test(rec)]
        return [r for r, _ in kept], [p for _, p in kept], len(all_records)

    def _objects(self, value: bytes | None) -> list[Any]:
        if not value:
            raise DecodeError("empty", "record has no value")
        if len(value) > self.max_bytes:
            raise DecodeError("too_large", f"{len(value)} bytes exceeds the limit of {self.max_bytes}")
        if value[:2] == SINGLE_OBJECT_MAGIC:
            schema = by_fingerprint().get(bytes(value[2:10]))
            if schema is None:
                raise DecodeError("unknown_schema", f"no schema with fingerprint {value[2:10].hex()}")
            return avro_objects(schema, memoryview(value)[10:])
        if value[0] == CONFLUENT_MAGIC:
            if len(value) < 5:
                raise DecodeError("bad_avro", "schema-registry framing shorter than 5 bytes")
            schema_id = struct.unpack(">I", value[1:5])[0]
            if self.registry is None:
                raise DecodeError(
                    "unknown_schema", f"schema-registry framing (id {schema_id}) but no registry configured"
                )
            return avro_objects(self.registry.get(schema_id), memoryview(value)[5:])
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            if b"\n" in value and value.lstrip()[:1] in (b"{", b"["):
                return _ndjson(value)
            kind = "invalid_utf8" if "utf-8" in str(exc).lower() else "not_json"
            raise DecodeError(kind, f"not Avro and not JSON: {exc}") from None
        if isinstance(decoded, list):
            if not decoded:
                raise DecodeError("empty", "empty JSON array")
            return decoded
        return [decoded]


def batch_elements(value: bytes | None) -> list[object]:
    """The elements of a batch message, undecoded (to cut one bad element out for the dead letters)."""
    try:
        elements = RawDecoder(len(value or b"") + 1)._objects(value)
    except DecodeError:
        return []
    return [e.raw if isinstance(e, UnparsedLine) else e for e in elements]


class UnparsedLine:
    """A line of newline-delimited JSON that did not parse: its bytes, and why."""

    __slots__ = ("error", "raw")

    def __init__(self, raw: bytes, error: DecodeError) -> None:
        self.raw = raw
        self.error = error


def _ndjson(value: bytes) -> list[Any]:
    """Newline-delimited JSON in one message: one object per line (a bad line is cut out, not the rest)."""
    out: list[Any] = []
    for line in value.splitlines():
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            out.append(UnparsedLine(line, DecodeError("not_json", f"line {len(out) + 1}: {exc}", line)))
    if not out:
        raise DecodeError("empty", "no JSON lines")
    return out


def _is_otlp_proto(value: bytes) -> bool:
    return value[0] == _OTLP_PROTO_START and value.lstrip()[:1] not in (b"{", b"[")


def _is_otlp_json(value: bytes) -> bool:
    head = value[:64].lstrip()
    return head[:1] == b"{" and (b'"resourceLogs"' in head or b'"resource_logs"' in head)


def good_positions(records: Sequence[object], errors: Sequence[tuple[int | None, DecodeError]]) -> list[int]:
    """Positions in the raw message of the records RawDecoder.decode returned (the bad ones skipped)."""
    if not errors:
        return list(range(len(records)))
    if not records:
        return []  # the whole message failed (an error without an index) or every element did
    bad = {i for i, _ in errors if i is not None}
    return [i for i in range(len(records) + len(bad)) if i not in bad]


class RawEncoder:
    """Encodes one key's LogRecords into one logs.raw value in the configured wire format."""

    def __init__(
        self, wire_format: str = "avro", registry: SchemaRegistry | None = None, topic: str = ""
    ) -> None:
        if wire_format == "confluent" and registry is None:
            from pipeline.errors import ConfigError

            raise ConfigError("wire_format=confluent needs HINDSIGHT_SCHEMA_REGISTRY_URL")
        self.wire_format = wire_format
        self.registry = registry
        self.subject = f"{topic}-value"

    def encode(self, records: Sequence[LogRecord]) -> bytes:
        if self.wire_format == "json":
            return orjson.dumps(records[0] if len(records) == 1 else list(records))
        schema = schemas()["LogRecord" if len(records) == 1 else "LogBatch"]
        datum: Any = records[0] if len(records) == 1 else {"records": list(records)}
        if self.wire_format == "confluent":
            assert self.registry is not None
            schema_id = self.registry.register(self.subject, schema)
            return struct.pack(">bI", CONFLUENT_MAGIC, schema_id) + schema.write(datum)
        return schema.header + schema.write(datum)


def complete(record: LogRecord) -> LogRecord:
    """Fill optional fields so the Avro writer accepts a record built by hand."""
    return normalize(record)


# ----------------------------------------------------------------------------------------------
# Curated topic
# ----------------------------------------------------------------------------------------------


def iter_json_lines(lines: Iterable[str | bytes]) -> Iterable[tuple[int, object | DecodeError]]:
    """Parse JSON lines (for `hindsight publish`): yields (line number, object or error)."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            yield number, orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield number, DecodeError("not_json", f"line {number}: {exc}")
