"""The one exception tree of log-hindsight.

HindsightError                 base; CLI prints its message as one line, no traceback
├── ConfigError                settings that cannot work (bad URL, missing jar cache, ...)
├── BrokerUnavailable          Kafka cannot be reached; names the bootstrap servers
├── StackError                 the local broker could not be fetched, formatted or started
├── PublishError               the publisher cannot place lines (raw topic missing, no metadata)
├── DecodeError                a raw or curated Kafka record that cannot be used
│                              (error_type says why: not_json, bad_avro, unknown_schema,
│                              too_large, missing_field, wrong_type, ...); goes to logs.dlq
├── SinkError                  raised by connectors, classified once per connector:
│   ├── RetryableSinkError     store unreachable or overloaded: back off, retry the batch
│   └── BadDataError           store rejected the rows: dead-letter them with the message
├── StoreBusy                  the embedded chDB store is owned by another process
└── QueryError                 a query could not be built or run
"""

from __future__ import annotations


class HindsightError(Exception):
    """Base of every error log-hindsight raises on purpose."""


class ConfigError(HindsightError):
    """Settings that cannot work."""


class BrokerUnavailable(HindsightError):
    """Kafka did not answer in time."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        self.bootstrap = bootstrap
        msg = f"Kafka broker not reachable at {bootstrap}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class StackError(HindsightError):
    """The local broker could not be fetched, formatted or started."""


class PublishError(HindsightError):
    """The publisher cannot place lines on the raw topic."""


class DecodeError(HindsightError):
    """A record that cannot be used; error_type is a short machine-readable reason."""

    def __init__(self, error_type: str, detail: str, payload: bytes | None = None) -> None:
        self.error_type = error_type
        self.detail = detail
        self.payload = payload  # the offending element's own bytes, when the decoder cut it out
        super().__init__(f"{error_type}: {detail}")


class SinkError(HindsightError):
    """Base of errors raised by sink connectors."""


class RetryableSinkError(SinkError):
    """Transient: the runner backs off and retries the same batch."""


class BadDataError(SinkError):
    """Permanent for these rows: the runner dead-letters them with this message."""


class StoreBusy(HindsightError):
    """The embedded store's data dir is opened by another process."""


class QueryError(HindsightError):
    """A query could not be built or run."""
