"""Log records from decoded objects: field aliases, timestamps in any common unit, types checked,
defaults filled. Every path into the pipeline (raw decoding, OTLP, the publisher) normalises here."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from pipeline.errors import DecodeError
from pipeline.types import Level, LogRecord

# Sanity window for event time: anything outside is a producer bug, not a log line.
MIN_TS_US = 946_684_800_000_000  # 2000-01-01
MAX_TS_US = 4_102_444_800_000_000  # 2100-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


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
        micros = (parsed - _EPOCH) // _MICROSECOND  # exact: a float of seconds loses the last digit
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
