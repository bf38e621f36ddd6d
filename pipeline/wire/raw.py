"""The wire formats of logs.raw: JSON objects, arrays and common aliases normalised into log records;
Avro single-object and schema-registry framing; the decoder (per-record dead letters) and encoder."""

from __future__ import annotations

import operator
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, cast

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.types import Level, LogRecord
from pipeline.wire.avro import SINGLE_OBJECT_MAGIC, avro_objects, by_fingerprint, schemas
from pipeline.wire.registry import SchemaRegistry

CONFLUENT_MAGIC = 0
# Sanity window for event time: anything outside is a producer bug, not a log line.
MIN_TS_US = 946_684_800_000_000  # 2000-01-01
MAX_TS_US = 4_102_444_800_000_000  # 2100-01-01
_JSON_START = frozenset(b"[{ \t\r\n")
_asdict = msgspec.structs.asdict


# ----------------------------------------------------------------------------------------------
# Normalising JSON objects into LogRecords
# ----------------------------------------------------------------------------------------------

_ALIASES = {
    "msg": "message",
    "body": "message",
    "severity": "level",
    "severity_text": "level",
    "levelname": "level",
    "service_name": "service",
    "service.name": "service",
    "@timestamp": "timestamp",
    "ts": "timestamp",
    "time": "timestamp",
    "session.id": "session_id",
    "enduser.id": "user_id",
    "http.route": "endpoint",
    "trace.id": "trace_id",
    "span.id": "span_id",
}
_ID_FIELDS = ("session_id", "user_id", "endpoint", "transaction_id", "trace_id", "span_id")
_KNOWN = {
    "timestamp",
    "observed_timestamp",
    "service",
    "level",
    "severity_number",
    "message",
    "latency_ms",
    "status_code",
    "security_flags",
    "attributes",
    *_ID_FIELDS,
}


def to_micros(value: object, field: str = "timestamp") -> int:
    """Epoch time as int/float (s, ms, us or ns by magnitude) or ISO-8601 string -> microseconds."""
    if isinstance(value, bool):
        raise DecodeError("wrong_type", f"{field} must be a number or ISO-8601 string, got bool")
    if isinstance(value, int | float):
        magnitude = abs(value)
        if magnitude < 1e11:
            micros = int(value * 1_000_000)
        elif magnitude < 1e14:
            micros = int(value * 1_000)
        elif magnitude < 1e17:
            micros = int(value)
        else:
            micros = int(value // 1_000)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DecodeError("wrong_type", f"{field} is not an ISO-8601 time: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise DecodeError("wrong_type", f"{field} has no time zone: {value[:64]!r}")
        micros = int(parsed.timestamp() * 1_000_000)
    else:
        raise DecodeError("wrong_type", f"{field} must be a number or ISO-8601 string")
    if not MIN_TS_US <= micros < MAX_TS_US:
        raise DecodeError("bad_timestamp", f"{field} {value!r} is outside 2000..2100")
    return micros


def _str_field(obj: dict[str, Any], field: str, required: bool) -> str | None:
    value = obj.get(field)
    if value is None:
        if required:
            raise DecodeError("missing_field", f"field {field!r} is required")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and field in _ID_FIELDS:
        return str(value)
    raise DecodeError("wrong_type", f"field {field!r} must be a string, got {type(value).__name__}")


def _attr_value(value: object) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


_LEVEL_NAMES = {level.name: level.value for level in Level}
_NUMBER = (int, float)


_CANONICAL = frozenset(_KNOWN)


def _fast(obj: dict[str, Any], now_us: int) -> LogRecord | None:
    """The canonical shape (what our publisher and most shippers send), checked in one pass.

    A complete record is validated in place and returned as it is; anything else returns None and
    takes the full, lenient path below. Worth it: this runs once per line on the worker's hot path.
    """
    if obj.keys() != _CANONICAL:
        return None
    service, message, level, ts = obj["service"], obj["message"], obj["level"], obj["timestamp"]
    observed, severity = obj["observed_timestamp"], obj["severity_number"]
    latency, status, flags, attrs = (
        obj["latency_ms"],
        obj["status_code"],
        obj["security_flags"],
        obj["attributes"],
    )
    if (
        type(service) is not str
        or type(message) is not str
        or type(level) is not str
        or level not in _LEVEL_NAMES
        or type(ts) is not int
        or not MIN_TS_US <= ts < MAX_TS_US
        or (observed is not None and (type(observed) is not int or not MIN_TS_US <= observed < MAX_TS_US))
        or (severity is not None and (type(severity) is not int or not 0 <= severity <= 24))
        or (latency is not None and type(latency) is not float and type(latency) is not int)
        or (status is not None and type(status) is not int)
        or (flags is not None and type(flags) is not list)
        or (attrs is not None and type(attrs) is not dict)
    ):
        return None
    for value in (
        obj["session_id"],
        obj["user_id"],
        obj["endpoint"],
        obj["transaction_id"],
        obj["trace_id"],
        obj["span_id"],
    ):
        if value is not None and type(value) is not str:
            return None
    if flags:
        for f in flags:
            if type(f) is not str:
                return None
    if attrs:
        for v in attrs.values():
            if type(v) is not str:
                return None
    if observed is None:
        obj["observed_timestamp"] = now_us
    if not severity:
        obj["severity_number"] = _LEVEL_NAMES[level]
    if type(latency) is int:
        obj["latency_ms"] = float(latency)
    if flags is None:
        obj["security_flags"] = []
    if attrs is None:
        obj["attributes"] = {}
    return cast(LogRecord, obj)


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


def normalize(obj: object, now_us: int | None = None) -> LogRecord:
    """Validate one decoded object and return a complete LogRecord; raise DecodeError if unusable."""
    if type(obj) is dict:
        fast = _fast(obj, time.time_ns() // 1000 if now_us is None else now_us)
        if fast is not None:
            return fast
    if not isinstance(obj, dict):
        raise DecodeError("wrong_type", f"a log line must be a JSON object, got {type(obj).__name__}")
    if not _KNOWN.issuperset(obj):
        obj = dict(obj)
        for alias, field in _ALIASES.items():
            if alias in obj and field not in obj:
                obj[field] = obj.pop(alias)
    service = cast(str, _str_field(obj, "service", True))
    message = cast(str, _str_field(obj, "message", True))
    raw_level = obj.get("level")
    if raw_level is None:
        raise DecodeError("missing_field", "field 'level' is required")
    try:
        level = Level.parse(raw_level)
    except ValueError as exc:
        raise DecodeError("wrong_type", str(exc)) from None
    if now_us is None:
        now_us = time.time_ns() // 1000
    ts = obj.get("timestamp")
    timestamp = to_micros(ts) if ts is not None else now_us
    observed = obj.get("observed_timestamp")
    severity = obj.get("severity_number") or 0
    if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 24:
        raise DecodeError("wrong_type", "severity_number must be an integer 0..24")
    latency = obj.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise DecodeError("wrong_type", "latency_ms must be a number")
    status = obj.get("status_code")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise DecodeError("wrong_type", "status_code must be an integer")
    flags = obj.get("security_flags") or []
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise DecodeError("wrong_type", "security_flags must be a list of strings")
    attrs_in = obj.get("attributes") or {}
    if not isinstance(attrs_in, dict):
        raise DecodeError("wrong_type", "attributes must be an object")
    attributes = {str(k): _attr_value(v) for k, v in attrs_in.items()}
    for key, value in obj.items():
        if key not in _KNOWN and value is not None:
            attributes.setdefault(key, _attr_value(value))
    record: LogRecord = {
        "timestamp": timestamp,
        "observed_timestamp": to_micros(observed, "observed_timestamp") if observed is not None else now_us,
        "service": service,
        "level": level.name,
        "severity_number": severity or level.value,
        "message": message,
        "latency_ms": float(latency) if latency is not None else None,
        "status_code": status,
        "security_flags": flags,
        "attributes": attributes,
    }
    for field in _ID_FIELDS:
        record[field] = _str_field(obj, field, False)  # type: ignore[literal-required]
    return record


# ----------------------------------------------------------------------------------------------
# Raw topic
# ----------------------------------------------------------------------------------------------


class RawDecoder:
    """Decodes one logs.raw value into LogRecords and per-line rejections; never raises on bad input."""

    def __init__(self, max_bytes: int, registry: SchemaRegistry | None = None) -> None:
        self.max_bytes = max_bytes
        self.registry = registry

    def decode(self, value: bytes | None) -> tuple[list[LogRecord], list[tuple[int | None, DecodeError]]]:
        """Return (records, [(index or None for the whole message, error)])."""
        now_us = time.time_ns() // 1000
        if value and value[0] in _JSON_START and len(value) <= self.max_bytes:
            fast = _canonical_json(value, now_us)
            if fast is not None:
                return fast, []
        try:
            objects = self._objects(value)
        except DecodeError as exc:
            return [], [(None, exc)]
        records: list[LogRecord] = []
        errors: list[tuple[int | None, DecodeError]] = []
        for index, obj in enumerate(objects):
            try:
                records.append(normalize(obj, now_us))
            except DecodeError as exc:
                errors.append((index if len(objects) > 1 else None, exc))
        return records, errors

    def decode_where(self, value: bytes | None, where: Where) -> tuple[list[LogRecord], list[int], int]:
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
                records = _records_of((item for _, item in picked), time.time_ns() // 1000)
                return records, [i for i, _ in picked], len(items)
        all_records, errors = self.decode(value)
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
            kind = "invalid_utf8" if "utf-8" in str(exc).lower() else "not_json"
            raise DecodeError(kind, f"not Avro and not JSON: {exc}") from None
        if isinstance(decoded, list):
            if not decoded:
                raise DecodeError("empty", "empty JSON array")
            return decoded
        return [decoded]


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
