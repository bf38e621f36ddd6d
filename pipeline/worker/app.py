"""The Faust worker: a thin agent around RawProcessor, reading logs.sessions, writing curated and DLQ."""

from __future__ import annotations

import asyncio
import atexit
import logging
import ssl
import time
from typing import Any

import faust
import orjson

from pipeline import engine
from pipeline.errors import ConfigError
from pipeline.metrics import LagCache, serve
from pipeline.rules.levelpoll import LevelPoller
from pipeline.rules.store import RuleReader, RuleSource, dead_letter_producer
from pipeline.settings import Settings
from pipeline.wire.curated_topic import curated_messages
from pipeline.wire.deadletter import dlq_headers
from pipeline.worker.metrics import WorkerCollector
from pipeline.worker.processor import Outcome, RawProcessor, tune_gc
from pipeline.worker.rebuild import read_back
from pipeline.worker.sharedlog import SharedLog

log = logging.getLogger(__name__)


def faust_broker(settings: Settings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in settings.bootstrap.split(",") if server.strip()]


def faust_credentials(settings: Settings) -> Any:
    """The Faust (aiokafka) form of the librdkafka security settings in HINDSIGHT_KAFKA_EXTRA_CONFIG,
    so the worker talks to a SASL/TLS cluster like every other client: security.protocol,
    sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ssl.certificate.location,
    ssl.key.location."""
    extra = settings.kafka_extra_config
    protocol = extra.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=extra.get("ssl.ca.location"))
        if extra.get("ssl.certificate.location"):
            context.load_cert_chain(extra["ssl.certificate.location"], extra.get("ssl.key.location"))
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=extra.get("sasl.username"),
            password=extra.get("sasl.password"),
            mechanism=extra.get("sasl.mechanism", "PLAIN").upper(),
            ssl_context=context,
        )
    raise ConfigError(
        f"security.protocol {protocol!r} is not supported by the worker (PLAINTEXT, SSL, SASL_*)"
    )


def create_app(settings: Settings) -> tuple[faust.App, RawProcessor, SharedLog]:
    """Build the Faust app and its agent, with the processor and the shared-state log (not started)."""
    datadir = settings.home / "faust" / settings.app_id  # not "<app_id>-data" in the working directory
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=faust_broker(settings),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_compression_type="zstd",
        producer_max_request_size=max(settings.max_record_bytes * 2, 2_097_152),
        consumer_max_fetch_size=max(settings.max_record_bytes * 2, 4_194_304),
        broker_commit_interval=settings.worker_commit_interval_s,
        # After a broker restart the group can form before the broker knows its topics again: the
        # assignor then hands out nothing. A metadata refresh that sees the topic makes the group
        # rebalance; the default refresh (5 min) would leave the worker idle that long.
        consumer_metadata_max_age_ms=10_000,
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=max(settings.worker_session_timeout_s / 5, 1.0),
    )
    # the worker reads canonical batches re-keyed by session (written by `hindsight ingest`)
    sessions = app.topic(settings.sessions_topic, key_type=bytes, value_type=bytes)
    curated = app.topic(settings.curated_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes)
    stats = app.topic(settings.stats_topic, key_type=bytes, value_type=bytes)
    shared_log = SharedLog(settings)
    processor = RawProcessor(settings, shared_log.origin)
    warm: set[int] = set()

    async def share() -> None:
        """Publish what changed here; apply what every process changed (captures opened elsewhere
        emit this process's lines of them; an auth-failure count completed by a line here fires)."""
        shared_log.publish(processor.outbox())
        changes = shared_log.drain()
        if changes:
            await send(processor.apply_shared(changes))
            shared_log.publish(processor.outbox())

    async def rebuild(partition: int, offset: int, timestamp_s: float | None) -> None:
        """Before a newly assigned partition's first message: replay its recent past
        (RawProcessor.rebuild); what that emits for partitions already live here is sent."""
        ts_ms = int((timestamp_s or time.time()) * 1000)
        await share()  # what the shared log decided (auth failures of the dead owner) first
        loop = asyncio.get_running_loop()
        past = await loop.run_in_executor(
            None, read_back, settings, settings.sessions_topic, partition, offset, ts_ms
        )
        # what the replay emits is for partitions already live here (a capture it reopened)
        await send(processor.rebuild(settings.sessions_topic, partition, past))
        warm.add(partition)

    async def send(outcome: Outcome) -> None:
        # One curated message per input message (in slices), not one per session: a message
        # carries many sessions, and each send costs Faust ~50 us and fastavro a call.
        if not outcome.curated and not outcome.stats:
            return
        rows = [row for batch in outcome.curated.values() for row in batch]
        key = next(iter(outcome.curated)).encode() if len(outcome.curated) == 1 else None
        for value in curated_messages(rows, settings.curated_format):
            processor.sent_curated(len(value))
            await curated.send(key=key, value=value)
        if outcome.stats:
            await stats.send(key=b"stats", value=orjson.dumps(outcome.stats))

    # Offsets are committed by Faust only after the producer flushed what this agent sent,
    # so a crash repeats work (at-least-once) and never loses it; after a restart the window
    # state is rebuilt from logs.sessions, so a trigger still finds the lines that came before it.
    async def curate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            if msg.partition not in warm:
                await rebuild(msg.partition, msg.offset, msg.timestamp)
            outcome = processor.handle(msg.topic, msg.partition, msg.offset, event.value)
            await send(outcome)
            await share()
            for rej in outcome.rejected:
                await dlq.send(
                    key=msg.key,
                    value=rej.payload,
                    headers=dlq_headers(rej, msg.topic, msg.partition, msg.offset),
                )

    app.agent(sessions, name="hindsight.curate")(curate)

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked: set[Any] = kwargs.get("revoked") or (args[0] if args else set())
        for tp in revoked:
            if tp.topic == settings.sessions_topic:
                warm.discard(tp.partition)
                processor.drop(tp.topic, tp.partition)

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned: set[Any] = kwargs.get("assigned") or (args[0] if args else set())
        mine = sorted(tp.partition for tp in assigned if tp.topic == settings.sessions_topic)
        log.info("worker ready topic=%s partitions=%s shared_origin=%s", settings.sessions_topic, mine,
                 shared_log.origin)  # fmt: skip

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    async def tick() -> None:
        await send(processor.tick(time.time_ns() // 1000))

    app.timer(1.0)(tick)
    app.timer(0.2)(share)  # while no message comes, changes of other processes still apply

    evicted_before = [0]

    async def report() -> None:
        s = processor.stats()
        m = s.windows
        if m.evicted_lines > evicted_before[0]:
            # silent evictions were the old failure: a trigger then finds no lookback
            log.warning(
                "buffers evicting lines=%s effective_lookback_s=%.1f lookback_s=%.1f buffered_bytes=%s "
                "budget_bytes=%s hint=raise HINDSIGHT_MEMORY_BUDGET_MB or add workers",
                m.evicted_lines - evicted_before[0],
                s.effective_lookback_us / 1e6,
                s.lookback_us / 1e6,
                s.buffered_bytes,
                s.memory_budget_bytes,
            )
            evicted_before[0] = m.evicted_lines
        log.info(
            "worker stats lines_in=%s lines_emitted=%s triggers=%s sessions=%s evicted_lines=%s "
            "evicted_sessions=%s dlq_records=%s",
            m.lines_in,
            m.lines_emitted,
            m.triggers,
            s.sessions,
            m.evicted_lines,
            m.evicted_sessions,
            s.dlq_records,
        )

    app.timer(30.0)(report)
    return app, processor, shared_log


def start_rules(settings: Settings, processor: RawProcessor) -> RuleReader:
    """Follow the rules topic (and the level URL, if configured) into the processor's windows.

    Waits until the topic was read to its end, so the first raw line already sees every rule.
    """
    source = RuleSource(processor.set_rules)
    reader = RuleReader(settings, source.set_topic_rules, dead_letter_producer(settings))
    reader.start()
    if not reader.ready.wait(30):
        log.warning("rules topic not read within 30 s; starting without rules topic=%s", settings.rules_topic)
    if settings.level_url:
        LevelPoller(
            settings.level_url, settings.level_poll_s, settings.level_timeout_s, source.set_level_rules
        ).start()
    return reader


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run the worker until SIGTERM/SIGINT."""
    from pipeline.kafka import ensure_topics, group_lag

    ensure_topics(settings)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # ~25% less per-message overhead in Faust
    except ImportError:
        log.info("uvloop not installed; using asyncio's default event loop")
    app, processor, shared_log = create_app(settings)
    log.info("worker starting app_id=%s window_engine=%s", settings.app_id, engine.NATIVE)
    lag = LagCache(
        settings.app_id,
        settings.sessions_topic,
        lambda: group_lag(settings, settings.app_id, settings.sessions_topic),
    )
    serve(settings, WorkerCollector(processor, lag))
    start_rules(settings, processor)
    shared_log.start()
    atexit.register(shared_log.stop)  # what this worker changed last reaches the others on SIGTERM too
    if not shared_log.ready.wait(30):
        log.warning(
            "shared state topic not read within 30 s; starting anyway topic=%s", settings.shared_topic
        )
    tune_gc(settings.worker_gc_threshold)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    worker.execute_from_commandline()
