"""PostgreSQL sink: kept lines in a support database table, created on start, one row per raw line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pipeline.errors import BadDataError, ConfigError, RetryableSinkError
from pipeline.settings import Settings
from pipeline.types import CuratedRecord

log = logging.getLogger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    raw_id          text PRIMARY KEY,            -- topic:partition:offset:index, the dedup key
    ts              timestamptz NOT NULL,
    service         text NOT NULL,
    level           text NOT NULL,
    message         text NOT NULL,
    session_id      text,
    user_id         text,
    endpoint        text,
    transaction_id  text,
    trace_id        text,
    latency_ms      double precision,
    status_code     integer,
    attributes      jsonb NOT NULL DEFAULT '{{}}',
    trigger_reasons text[] NOT NULL DEFAULT '{{}}',
    trigger_id      text,
    rule_ids        text[] NOT NULL DEFAULT '{{}}',
    tags            text[] NOT NULL DEFAULT '{{}}',
    inserted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {table}_user_ts ON {table} (user_id, ts);
CREATE INDEX IF NOT EXISTS {table}_session_ts ON {table} (session_id, ts)
"""
COLUMNS = ("raw_id", "ts", "service", "level", "message", "session_id", "user_id", "endpoint",
           "transaction_id", "trace_id", "latency_ms", "status_code", "attributes", "trigger_reasons",
           "trigger_id", "rule_ids", "tags")  # fmt: skip


def _values(r: CuratedRecord) -> tuple[Any, ...]:
    return (
        f"{r['raw_topic']}:{r['raw_partition']}:{r['raw_offset']}:{r['raw_index']}",
        datetime.fromtimestamp(r["timestamp"] / 1e6, UTC),
        r["service"],
        r["level"],
        r["message"],
        r.get("session_id"),
        r.get("user_id"),
        r.get("endpoint"),
        r.get("transaction_id"),
        r.get("trace_id"),
        r.get("latency_ms"),
        r.get("status_code"),
        Jsonb(r.get("attributes") or {}),
        list(r.get("trigger_reasons") or []),
        r.get("trigger_id"),
        list(r.get("rule_ids") or []),
        list(r.get("tags") or []),
    )


def classify(exc: Exception) -> Exception:
    """Retry while the database is unreachable or busy; dead-letter what it refuses as data."""
    if isinstance(exc, psycopg.OperationalError | psycopg.errors.AdminShutdown):
        return RetryableSinkError(f"PostgreSQL unavailable: {str(exc).splitlines()[0]}")
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | ValueError | TypeError | KeyError):
        return BadDataError(f"PostgreSQL refused the rows: {str(exc).splitlines()[0][:500]}")
    return RetryableSinkError(f"{type(exc).__name__}: {exc}")


class PostgresSink:
    """Inserts with ON CONFLICT (raw_id) DO NOTHING: redelivered lines add no rows."""

    name = "postgres"

    def __init__(self, dsn: str, table: str = "hindsight_logs") -> None:
        self.dsn = dsn
        self.table = table
        self._conn: psycopg.Connection[Any] | None = None
        self._pending: list[CuratedRecord] = []
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        self._insert = (
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
            "ON CONFLICT (raw_id) DO NOTHING"
        )
        try:
            with self._connection().cursor() as cur:
                for statement in DDL.format(table=table).split(";"):
                    # fixed DDL; the table name is validated by the setting's pattern
                    cur.execute(statement)
        except psycopg.Error as exc:
            raise ConfigError(f"postgres sink cannot prepare {table}: {str(exc).splitlines()[0]}") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresSink:
        if settings.postgres_dsn is None:
            raise ConfigError("the postgres sink needs HINDSIGHT_POSTGRES_DSN")
        return cls(settings.postgres_dsn.get_secret_value(), settings.postgres_table)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        return self._conn

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        rows, self._pending = self._pending, []  # the runner hands the batch again after a failure
        if not rows:
            return
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._insert, [_values(r) for r in rows])
        except Exception as exc:
            if self._conn is not None and self._conn.broken:
                self._conn = None
            raise classify(exc) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
