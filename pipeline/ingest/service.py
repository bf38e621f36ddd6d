"""The ingest process: consume logs.raw in batches (confluent-kafka `consume(n)`), route through the
IngestStage, produce canonical batches to logs.sessions and dead letters to logs.dlq, and commit the
raw offsets only after Kafka acknowledged everything produced from them. One poll is in flight at a
time: the next poll is routed while its acknowledgements come, and produced only once it is settled.

Delivery is at-least-once, and exact downstream: a crash between produce and commit makes the next
owner of a raw partition produce the same lines again, with the same origin (raw partition, offset,
index). Each producer writes a raw partition's lines to a canonical partition in raw-offset order
(idempotent producer: no gaps, no reordering), so a line at or below the highest origin the worker has
already seen from that raw partition on that canonical partition is a repeat, and the worker drops it
(pipeline.worker.dedup). Raw offsets are committed only after delivery, so nothing is lost. A
rebalance among live members repeats nothing: what was produced from a partition that moves away
is delivered and committed inside the revocation callback, while the partition is still ours.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.errors import BrokerUnavailable
from pipeline.ingest.stage import IngestStage, RawRecord, Routed
from pipeline.kafka import producer_config
from pipeline.settings import Settings
from pipeline.wire.deadletter import dlq_headers
from pipeline.wire.raw import RawDecoder
from pipeline.wire.registry import from_settings as registry_from_settings
from pipeline.wire.shapes import FieldMap

log = logging.getLogger(__name__)


# Large fetches and a deep prefetch queue: single-line messages of ~300 bytes come by the hundred
# thousand a second, and librdkafka's defaults (1 MB per partition fetch) leave consume(n) waiting.
# The ingest benchmark's limit (a plain consumer) uses the same.
FETCH_CONFIG = {
    "fetch.max.bytes": 64 * 1_048_576,
    "max.partition.fetch.bytes": 8 * 1_048_576,
    "queued.max.messages.kbytes": 256 * 1024,
}


@dataclass(slots=True)
class _Batch:
    """One poll, routed: what to produce, and the raw offsets to commit once it is all acknowledged."""

    routed: Routed  # with each raw partition's offset to commit (positions) and first offset (starts)
    failed_before: int = 0  # delivery failures counted before it was produced


def field_map(settings: Settings) -> FieldMap:
    return FieldMap(settings.ingest_field_map, settings.ingest_defaults, settings.ingest_presets)


class Ingest:
    """One ingest process: a member of the ingest consumer group."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        registry = registry_from_settings(settings)
        self.decoder = RawDecoder(settings.max_record_bytes, registry, field_map(settings))
        self.producer = Producer(
            {
                **producer_config(settings),
                # lz4: canonical batches are read once, soon, by the worker; it decodes lz4 cheaply
                "compression.type": "lz4",
                "linger.ms": 5,
            }
        )
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": settings.ingest_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": int(settings.ingest_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(settings.ingest_session_timeout_s * 1000 / 5),
                **FETCH_CONFIG,
            }
        )
        self.stage = IngestStage(self.decoder, self._partitions(), settings.ingest_lines_per_message)
        self.stopping = threading.Event()
        self.failed = 0
        self._error: str | None = None
        self._flight: _Batch | None = None  # the poll produced and not yet settled (run, _on_revoke)
        self._revoked: set[tuple[str, int]] = set()  # revoked during the current consume() call

    def _partitions(self) -> int:
        topic = self.settings.sessions_topic
        meta = self.producer.list_topics(topic, timeout=self.settings.request_timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BrokerUnavailable(self.settings.bootstrap, f"topic {topic} not found (hindsight topics)")
        return len(meta.partitions)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            self._error = str(err)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions move to another member (inside consume()): what was produced from them is
        delivered and, when all of it was, their offsets are committed here, while they are still
        ours, so their next owner starts after it instead of producing it again. The loop then
        neither commits nor rewinds them: a commit after the move could take the new owner's offset
        back, and a seek of a partition not assigned fails."""
        self.producer.flush(self.settings.request_timeout_s * 6)
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        # messages of these partitions that this consume() call collected before the callback ran
        # are set aside: the next owner reads them from the offset committed here
        self._revoked |= revoked
        flight = self._flight
        committed: dict[tuple[str, int], int] = {}
        if flight is not None:
            positions, starts = flight.routed.positions, flight.routed.starts
            moving = {key: positions[key] for key in revoked if key in positions}
            if moving and not len(self.producer) and self.failed == flight.failed_before:
                try:
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in moving.items()],
                                    asynchronous=False)  # fmt: skip
                    committed = moving
                except KafkaException as exc:  # not committed: the next owner produces them again
                    log.warning("ingest commit on revoke refused error=%s", exc)
            for key in revoked:
                positions.pop(key, None)
                starts.pop(key, None)
        moved = sorted(p for _, p in revoked)
        log.info("ingest partitions revoked partitions=%s committed=%s", moved,
                 sorted(f"{p}@{o}" for (_, p), o in committed.items()))  # fmt: skip

    def run(self) -> None:
        """Until stop(): poll, route, produce, then (after routing the next poll) flush and commit."""
        settings = self.settings
        self.consumer.subscribe([settings.raw_topic], on_revoke=self._on_revoke)
        log.info("ingest ready group=%s raw=%s sessions=%s", settings.ingest_group, settings.raw_topic,
                 settings.sessions_topic)  # fmt: skip
        # One batch in flight: its acknowledgements come while the next poll is routed, rather than
        # with Python waiting in flush(). Waiting took 0.79 s of 7.3 for 600k single-line messages
        # (~11%). The next batch is produced only after the one before it is settled, so a batch
        # read again after a failure never follows lines produced from later offsets.
        self._flight, self._revoked = None, set()
        try:
            while not self.stopping.is_set():
                batch = self.consumer.consume(settings.ingest_batch, timeout=0.2)
                if self._revoked:  # partitions moved away inside consume(): their messages are not ours
                    revoked, self._revoked = self._revoked, set()
                    batch = [m for m in batch if m.error() or (m.topic(), m.partition()) not in revoked]
                ready = self._route(batch) if batch else None
                flight: _Batch | None = self._flight
                if flight is not None:
                    flight_starts = flight.routed.starts
                    settled = self._settle(flight)
                    self._flight = None
                    if not settled:
                        # the in-flight batch's partitions were moved back; `ready` was never produced,
                        # so its other partitions go back to where it began, and all of it comes again
                        if ready is not None:
                            self._rewind(ready, but=flight_starts)
                        continue
                if ready is not None:
                    self._send(ready)
                    self._flight = ready
        finally:
            if self._flight is not None:
                self._settle(self._flight, wait=False)
                self._flight = None  # settled: close()'s revocation has nothing of it to commit
            self.producer.flush(settings.request_timeout_s * 6)
            self.consumer.close()

    def _route(self, batch: list[Message]) -> _Batch:
        # the stage reads the Messages in place (no copy per message) and notes the offsets
        # a consumed Message that is not an error event has its topic, partition and offset (the
        # client's stubs say Optional for all, since error events have none; the stage sets those aside)
        routed = self.stage.route(cast(list[RawRecord], batch))
        for error in routed.errors:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("ingest consume error=%s", error)
        return _Batch(routed)

    def _send(self, ready: _Batch) -> None:
        settings = self.settings
        produce = self.producer.produce
        ready.failed_before = self.failed
        for part, values in ready.routed.values.items():
            for value in values:
                self._produce(produce, settings.sessions_topic, value, part)
        for source, rej in ready.routed.rejected:
            headers: Any = dlq_headers(rej, source.topic(), source.partition(), source.offset())
            self._produce(produce, settings.dlq_topic, rej.payload, None, source.key(), headers)

    def _settle(self, sent: _Batch, wait: bool = True) -> bool:
        """Wait for Kafka to acknowledge a sent batch, then commit its offsets; if not all of it was
        acknowledged, move the consumer back to the batch's first offsets and commit nothing.
        `wait=False` (stopping): one bounded flush, and a commit only if it was all delivered."""
        if wait:
            while self.producer.flush(5) and not self.stopping.is_set():
                # Kafka is slow or away: hold on to this batch (back-pressure) rather than read more
                log.warning("ingest waiting for Kafka to acknowledge pending=%s", len(self.producer))
        else:
            self.producer.flush(self.settings.request_timeout_s * 6)
        if len(self.producer) or self.failed > sent.failed_before:
            # not all acknowledged: commit nothing, read the batch again (the worker drops repeats)
            log.warning("ingest batch not delivered, reading it again error=%s", self._error)
            if wait:
                self._rewind(sent)
            return False
        if sent.routed.positions:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sent.routed.positions.items()]
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # a rebalance took the partitions: their next owner re-reads from the last commit and
                # the worker drops the repeats (pipeline.worker.dedup)
                log.warning("ingest commit refused error=%s", exc)
        return True

    def _rewind(self, batch: _Batch, but: dict[tuple[str, int], int] | None = None) -> None:
        """Move the consumer back to the batch's first offsets, except on the partitions in `but`
        (already moved back further, to an earlier batch's start)."""
        for (t, p), first in batch.routed.starts.items():
            if but is None or (t, p) not in but:
                self.consumer.seek(TopicPartition(t, p, first))

    def _produce(
        self,
        produce: Any,
        topic: str,
        value: bytes,
        partition: int | None,
        key: bytes | None = None,
        headers: Any = None,
    ) -> None:
        kwargs: dict[str, Any] = {"on_delivery": self._delivered}
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers
        while True:
            try:
                produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.05)

    def stop(self) -> None:
        self.stopping.set()
