"""Service functions behind the CLI subcommands; each receives Settings and does one job."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import SecretStr

from connectors.base.routing import wrap
from connectors.base.runner import SinkRunner
from pipeline.api.query import QueryServer
from pipeline.errors import DecodeError, QueryError
from pipeline.kafka import ensure_topics, group_lag
from pipeline.metrics import LagCache, OtlpCollector, SinkCollector, serve
from pipeline.settings import Settings
from pipeline.store.client import server_token
from pipeline.store.query import MAX_TIME_US, QueryFilters, endpoint_stats, run_query, run_sql, store_summary
from pipeline.types import RawLine
from pipeline.wire.serde import RawDecoder, good_positions

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_sink(settings: Settings, name: str, stop: threading.Event | None = None) -> None:
    """Consume logs.curated into the named sink until SIGTERM/SIGINT (or `stop` is set)."""
    from connectors import load_sink

    ensure_topics(settings)
    sink = wrap(load_sink(name).from_settings(settings), settings.primary_sinks, settings.redaction)
    runner = SinkRunner(settings, sink)
    runners = [runner]
    stats_sink = getattr(sink, "stats_sink", None)
    if stats_sink is not None:
        runners.append(
            SinkRunner(
                settings,
                stats_sink(),
                f"{runner.group}-stats",
                settings.stats_topic,
                lambda m: decode_stats(m.value()),
            )
        )
    lags = [LagCache(r.group, r.topic, _lag_of(settings, r.group, r.topic)) for r in runners]
    metrics = serve(settings, SinkCollector(runners, lags))
    server = store_query_server(settings, sink)
    if server is not None:
        server.start()
    _stop_on_signal_or_event(runners, stop)
    log.info("sink running sink=%s group=%s topic=%s", name, runner.group, settings.curated_topic)
    helpers = [threading.Thread(target=r.run, name=f"sink-{r.topic}", daemon=True) for r in runners[1:]]
    for thread in helpers:
        thread.start()
    try:
        runner.run()
    finally:
        for r in runners[1:]:
            r.stop()
        for thread in helpers:
            thread.join(15)
        if server is not None:
            server.stop()
        if metrics is not None:
            metrics.shutdown()
        sink.close()
        m = runner.metrics
        log.info(
            "sink stopped rows=%s batches=%s retries=%s dlq_rows=%s",
            m.rows_written,
            m.batches,
            m.retries,
            m.dlq_rows,
        )


def _lag_of(settings: Settings, group: str, topic: str) -> Callable[[], dict[int, int]]:
    return lambda: group_lag(settings, group, topic)


def store_query_server(settings: Settings, sink: Any) -> QueryServer | None:
    """The query API of a store sink (None for sinks that hold no store): with chDB no other process
    may open the data dir, so the store owner answers reads, under the sink's lock."""
    client = getattr(sink, "client", None)
    if client is None:
        return None
    lock = getattr(sink, "lock")  # noqa: B009 - the store sink has one; the Sink protocol does not
    database = settings.clickhouse_database

    def query(filters: QueryFilters) -> list[dict[str, Any]]:
        with lock:
            return run_query(client, filters, database)

    def summary() -> dict[str, Any]:
        with lock:
            return store_summary(client, database)

    def stats(params: dict[str, str]) -> list[dict[str, Any]]:
        unknown = set(params) - {"endpoint", "since_us", "limit"}
        if unknown:
            raise QueryError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        try:
            since = int(params["since_us"]) if "since_us" in params else None
            limit = int(params.get("limit", "100"))
        except ValueError as exc:
            raise QueryError(f"bad number: {exc}") from None
        if since is not None and not 0 <= since <= MAX_TIME_US:
            raise QueryError(f"since_us must be within 0..{MAX_TIME_US}")
        if not 1 <= limit <= 100_000:
            raise QueryError("limit must be within 1..100000")
        with lock:
            return endpoint_stats(client, database, params.get("endpoint"), since, limit)

    reader = getattr(sink, "reader", client)

    def sql(text: str, limit: int) -> list[dict[str, Any]]:
        with lock:
            return run_sql(reader, text, limit)

    return QueryServer(
        settings.query_host, settings.query_port, query, summary, stats, sql, token=server_token(settings)
    )


def _stop_on_signal_or_event(runners: list[SinkRunner], stop: threading.Event | None) -> None:
    """Stop the runners on SIGTERM/SIGINT (when running in the main thread) or when `stop` is set."""

    def stop_all(*_: Any) -> None:
        for r in runners:
            r.stop()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop_all)
    if stop is not None:

        def watch(event: threading.Event) -> None:
            event.wait()
            stop_all()

        threading.Thread(target=watch, args=(stop,), daemon=True).start()


def decode_stats(value: bytes | None) -> list[Any]:
    """A logs.stats value: a JSON array of window statistics."""
    try:
        rows = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", str(exc)) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "kind" in r for r in rows):
        raise DecodeError("wrong_type", "logs.stats values are arrays of objects with a kind")
    return rows


def run_archive(settings: Settings, stop: threading.Event | None = None) -> None:
    """Archive logs.raw into hourly Avro files until SIGTERM/SIGINT (or `stop`); offsets committed
    only after a file is on disk."""
    from connectors.archive import ArchiveSink

    ensure_topics(settings)
    decoder = RawDecoder(settings.max_record_bytes)

    def decode(msg: Any) -> list[RawLine]:
        records, errors = decoder.decode(msg.value())
        if not records and errors:
            raise errors[0][1]  # the whole message is unusable: the runner dead-letters it
        # bad elements are dead-lettered by the worker already
        positions = good_positions(records, errors)
        return [
            RawLine(r, msg.topic(), msg.partition(), msg.offset(), i)
            for r, i in zip(records, positions, strict=True)
        ]

    batching = settings.model_copy(
        update={"sink_batch_ms": int(settings.archive_batch_s * 1000), "sink_batch_rows": 1_000_000}
    )
    sink: Any = ArchiveSink.from_settings(settings)  # a Sink of RawLines rather than curated rows
    runner = SinkRunner(
        batching,
        sink,
        f"{settings.sink_group}-archive",
        settings.raw_topic,
        decode,
    )
    _stop_on_signal_or_event([runner], stop)
    runner.run()


def migrate_store(settings: Settings) -> list[str]:
    """Apply the store's migrations (deploy/clickhouse/*.sql) once each; returns the versions applied."""
    from pipeline.store.clickhouse import migrate, open_client

    client = open_client(settings)
    try:
        return migrate(client, settings.clickhouse_database)
    finally:
        client.close()


def run_otlp(settings: Settings, stop: threading.Event | None = None) -> None:
    """The OTLP/HTTP receiver until SIGTERM/SIGINT (or `stop`)."""
    from pipeline.api.otlp import OtlpServer

    ensure_topics(settings)
    server = OtlpServer(settings).start()
    metrics = serve(settings, OtlpCollector(server))
    done = stop or threading.Event()
    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        server.stop()
        if metrics is not None:
            metrics.shutdown()
        log.info("otlp receiver stopped accepted=%s rejected=%s", server.accepted, server.rejected)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as HINDSIGHT_* variables, to hand to a child process."""
    import json

    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        key = f"HINDSIGHT_{name.upper()}"
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[key] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env
