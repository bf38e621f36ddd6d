"""Shared types: levels, the log record and curated record shapes, a raw line with its position."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, TypedDict


class Level(IntEnum):
    """Severity text of the OpenTelemetry log data model, ordered."""

    TRACE = 1
    DEBUG = 5
    INFO = 9
    WARN = 13
    ERROR = 17
    FATAL = 21

    @classmethod
    def parse(cls, value: object) -> Level:
        """Accept a level name (any case, common aliases) or an OTel severity number."""
        if isinstance(value, Level):
            return value
        if isinstance(value, str):
            name = LEVEL_ALIASES.get(value.strip().upper(), value.strip().upper())
            try:
                return cls[name]
            except KeyError:
                raise ValueError(f"unknown level {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 24:
            return level_from_severity(value)
        raise ValueError(f"level must be a name or severity number 1..24, got {value!r}")


LEVEL_ALIASES = {
    "WARNING": "WARN",
    "ERR": "ERROR",
    "CRITICAL": "FATAL",
    "CRIT": "FATAL",
    "EMERG": "FATAL",
    "ALERT": "FATAL",
    "PANIC": "FATAL",
    "NOTICE": "INFO",
    "INFORMATION": "INFO",
    "DBG": "DEBUG",
    "TRC": "TRACE",
}


def level_from_severity(number: int) -> Level:
    """Map an OTel severity number (1..24) to its range's level."""
    for level in reversed(Level):
        if number >= level.value:
            return level
    return Level.TRACE


class LogRecord(TypedDict, total=False):
    """A log line as it travels on logs.raw (fields of schemas/log_record.avsc)."""

    timestamp: int
    observed_timestamp: int | None
    service: str
    level: str
    severity_number: int
    message: str
    session_id: str | None
    user_id: str | None
    endpoint: str | None
    transaction_id: str | None
    trace_id: str | None
    span_id: str | None
    latency_ms: float | None
    status_code: int | None
    security_flags: list[str]
    attributes: dict[str, str]
    template_id: str | None  # the message's shape (engine/templates.py): set by ingest, else at curation
    # where the line sits in logs.raw: set by ingest on logs.sessions, and on every curated line
    raw_topic: str
    raw_partition: int
    raw_offset: int
    raw_index: int


class CuratedRecord(LogRecord, total=False):
    """A kept line on logs.curated (fields of schemas/curated_record.avsc)."""

    trigger_reasons: list[str]
    trigger_id: str | None
    trigger_offset: int | None
    rule_ids: list[str]
    tags: list[str]
    retention_days: int
    routes: list[str]


# Optional per-line context of a LogRecord (besides time, service, level, message and attributes).
CONTEXT_FIELDS = ("session_id", "user_id", "endpoint", "transaction_id", "trace_id", "span_id",
                  "latency_ms", "status_code", "security_flags")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RawLine:
    """A decoded line with its position in logs.raw; (topic, partition, offset, index) is its id."""

    record: LogRecord
    topic: str
    partition: int
    offset: int
    index: int = 0


class LineView(Protocol):
    """A decoded line as the window engine's per-line loop reads it: attributes of a validated struct,
    no dict per line (building one was ~a quarter of the worker's time, 2-4 us a line, py-spy and
    bench/worker_throughput.py). `record()` is the line as a LogRecord, for the few lines that may
    trigger, match a rule or be emitted."""

    @property
    def timestamp(self) -> int: ...
    @property
    def service(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def transaction_id(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def endpoint(self) -> str | None: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def status_code(self) -> int | None: ...
    @property
    def security_flags(self) -> list[str]: ...
    @property
    def attributes(self) -> dict[str, str]: ...
    @property
    def template_id(self) -> str | None: ...

    def record(self) -> LogRecord: ...


@dataclass(slots=True)
class Origins:
    """What the lines of a framed message do not carry themselves (ingest passes a raw value on as it
    came, without writing ~140 bytes of origin into it): each line's origin in logs.raw, its template
    id and, when the line had none, its observed time. A line's record is its own fields and these."""

    raw_topic: list[str]
    raw_partition: list[int]
    raw_offset: list[int]
    raw_index: list[int]
    template_id: list[str]
    observed: list[int | None]

    def complete(self, rec: LogRecord, pos: int) -> LogRecord:
        """The record of line `pos` decoded from its own bytes, with what the frame says of it."""
        rec["raw_topic"] = self.raw_topic[pos]
        rec["raw_partition"] = self.raw_partition[pos]
        rec["raw_offset"] = self.raw_offset[pos]
        rec["raw_index"] = self.raw_index[pos]
        rec["template_id"] = self.template_id[pos]
        observed = self.observed[pos]
        if observed is not None:
            rec["observed_timestamp"] = observed
        return rec


# Bits of Columns.flags: what a trigger reads of a line's security flags and attributes, without them.
FLAG_SECURITY = 1  # security_flags is not empty
FLAG_TIMEOUT = 2  # the attributes hold the timeout attribute (Columns.timeout_attribute)


@dataclass(slots=True)
class Columns:
    """The lines of one message, field by field, grouped by session: what the window engine's per-line
    loop reads. Ingest writes these columns beside each canonical message (pipeline/wire/frames.py),
    so the worker neither validates nor cuts the lines it only buffers: 0.5 us a line against 2.6-3.7
    for the structs and the cut (measured on 1000-line messages). The lines themselves are `body` (a
    JSON array, `ends` the end of each line in it) or, for lines decoded another way, `views`."""

    keys: list[str]  # each group's session key; its lines are the next counts[g] of every column
    counts: list[int]
    timestamp: list[int]
    level: list[str]
    service: list[str]
    endpoint: list[str | None]
    user_id: list[str | None]
    latency_ms: list[float | None]
    status_code: list[int | None]
    flags: list[int]  # FLAG_SECURITY | FLAG_TIMEOUT
    template_id: list[str]  # "" when the catalog is off
    size: list[int]  # the message's length (what the window statistics count)
    timeout_attribute: str  # the attribute FLAG_TIMEOUT was computed for
    body: bytes | None = None
    ends: list[int] | None = None
    origins: Origins | None = None  # beside body: what its lines do not carry themselves
    decode: Callable[[bytes], LogRecord] | None = None  # beside body: one line of it as its record
    views: list[LineView] | None = None
    encoded: list[bytes] | None = None  # beside views: each line's encoded form, buffered instead
    idx: list[int] | None = None  # beside views: positions in the raw message when some were rejected


def line_session_key(line: LineView) -> str:
    """session_key() of a LineView."""
    if line.session_id:
        return line.session_id
    if line.transaction_id:
        return f"tx:{line.transaction_id}"
    if line.user_id:
        return f"user:{line.user_id}"
    return f"svc:{line.service}"


def session_key(record: LogRecord) -> str:
    """Partitioning and buffering key: session, else transaction, else user, else service."""
    for field, prefix in (("session_id", ""), ("transaction_id", "tx:"), ("user_id", "user:")):
        value = record.get(field)
        if value:
            return f"{prefix}{value}"
    return f"svc:{record.get('service', '')}"


JSONDict = dict[str, Any]

# A custom rule predicate's name: package.module:function, no part starting with "_" (no dunders, no
# private helpers). Rules name one exactly; HINDSIGHT_RULES_CUSTOM_ALLOW lists them exactly.
CUSTOM_FUNCTION = r"^[A-Za-z]\w*(\.[A-Za-z]\w*)*:[A-Za-z]\w*$"
