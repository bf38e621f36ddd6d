"""Service functions behind the CLI subcommands; each receives Settings and does one job."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import SecretStr

from connectors.base.metrics import SinkCollector
from connectors.base.protocols import HasStatsSink, Sink, StoreReader
from connectors.base.routing import wrap
from connectors.base.runner import SinkRunner
from pipeline.api.base import Limits, Tokens
from pipeline.api.otlp import OtlpCollector
from pipeline.api.query import QueryServer
from pipeline.errors import DecodeError
from pipeline.kafka import ensure_topics, group_lag, record_time_us
from pipeline.metrics import LagCache, serve
from pipeline.settings import Settings
from pipeline.store.client import server_token
from pipeline.types import RawLine
from pipeline.wire.raw import RawDecoder, good_positions

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_sink(settings: Settings, name: str, stop: threading.Event | None = None) -> None:
    """Consume logs.curated into the named sink until SIGTERM/SIGINT (or `stop` is set)."""
    from connectors import load_sink

    ensure_topics(settings)
    sink = wrap(load_sink(name).from_settings(settings), settings)
    runner = SinkRunner(settings, sink)
    runners = [runner]
    if isinstance(sink.sink, HasStatsSink):
        runners.append(
            SinkRunner(
                settings,
                sink.sink.stats_sink(),
                f"{runner.group}-stats",
                settings.stats_topic,
                lambda m: decode_stats(m.value()),
            )
        )
    lags = [LagCache(r.group, r.topic, _lag_of(settings, r.group, r.topic)) for r in runners]
    metrics = serve(settings, SinkCollector(runners, lags))
    server = store_query_server(settings, sink.sink)
    if server is not None:
        server.start()
    _stop_on_signal_or_event(runners, stop)
    log.info(
        "sink ready sink=%s group=%s topic=%s query_api=%s",
        name,
        runner.group,
        settings.curated_topic,
        settings.query_url if server is not None else "none",
    )
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


def store_query_server(settings: Settings, sink: Sink) -> QueryServer | None:
    """The query API of a sink that holds a store (None for the others): with chDB no other process
    may open the data dir, so the store owner answers reads."""
    if not isinstance(sink, StoreReader):
        return None
    return QueryServer(
        settings.query_host,
        settings.query_port,
        sink.query,
        sink.summary,
        sink.stats,
        sink.sql,
        # the store owner's token (HINDSIGHT_API_TOKEN or its own), and a read-only token when set
        token=Tokens.from_settings(settings, admin=server_token(settings)),
        limits=Limits.from_settings(settings),
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
        records, errors = decoder.decode(msg.value(), record_time_us(msg))
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
    """The OTLP receivers, HTTP and gRPC (unless its port is 0), until SIGTERM/SIGINT (or `stop`)."""
    from pipeline.api.otlp import OtlpServer

    ensure_topics(settings)
    server = OtlpServer(settings)
    grpc_server = None
    if settings.otlp_grpc_port:
        from pipeline.api.otlp_grpc import OtlpGrpcServer

        grpc_server = OtlpGrpcServer(settings, server)  # a missing grpc extra fails before anything starts
    server.start()
    if grpc_server is not None:
        grpc_server.start()
    metrics = serve(settings, OtlpCollector(server))
    done = stop or threading.Event()
    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        if grpc_server is not None:
            grpc_server.stop()
        server.stop()
        if metrics is not None:
            metrics.shutdown()
        log.info("otlp receiver stopped accepted=%s rejected=%s", server.accepted, server.rejected)


def run_ingest(settings: Settings, stop: threading.Event | None = None) -> None:
    """The ingest stage until SIGTERM/SIGINT (or `stop`): logs.raw -> logs.sessions."""
    from pipeline.ingest.metrics import IngestCollector
    from pipeline.ingest.service import Ingest
    from pipeline.worker.processor import tune_gc

    ensure_topics(settings)
    ingest = Ingest(settings)
    lag = LagCache(
        settings.ingest_group,
        settings.raw_topic,
        _lag_of(settings, settings.ingest_group, settings.raw_topic),
    )
    metrics = serve(settings, IngestCollector(ingest.stage, ingest.decoder.shapes, lag))
    if stop is None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: ingest.stop())
    elif stop is not None:
        threading.Thread(target=_stop_when, args=(stop, ingest.stop), daemon=True).start()
    tune_gc(settings.worker_gc_threshold)
    try:
        ingest.run()
    finally:
        if metrics is not None:
            metrics.shutdown()
        s = ingest.stage
        log.info("ingest stopped messages=%s lines_out=%s dlq=%s", s.messages_in, s.lines_out, s.dlq_by_type)


def _stop_when(event: threading.Event, stop: Callable[[], None]) -> None:
    event.wait()
    stop()


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
