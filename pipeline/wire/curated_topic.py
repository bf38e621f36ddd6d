"""Writing logs.curated: rows cut into messages of at most CURATED_BATCH rows, encoded in the
configured format; one writer for the worker (through Faust), replay and support captures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from confluent_kafka import Producer

from pipeline.errors import BrokerUnavailable
from pipeline.kafka import producer_config
from pipeline.settings import Settings
from pipeline.types import CuratedRecord
from pipeline.wire.curated import encode_curated

# Rows per curated message: ~500 x ~0.5 KB stays well below the producer's request size, and each
# message costs Faust ~50 us and fastavro one call, so fewer, larger messages are cheaper.
CURATED_BATCH = 500


def curated_messages(rows: Sequence[CuratedRecord], fmt: str) -> Iterator[bytes]:
    """The values of logs.curated messages carrying `rows`, in order."""
    for i in range(0, len(rows), CURATED_BATCH):
        yield encode_curated(rows[i : i + CURATED_BATCH], fmt)


class CuratedProducer:
    """Rows to logs.curated through a confluent-kafka producer, a message per CURATED_BATCH rows."""

    def __init__(self, settings: Settings, key: bytes | None = None) -> None:
        self.settings = settings
        self.key = key
        self.producer = Producer(producer_config(settings))
        self.batch: list[CuratedRecord] = []
        self.rows = 0

    def add_many(self, rows: Sequence[CuratedRecord]) -> None:
        self.batch.extend(rows)
        self.rows += len(rows)
        if len(self.batch) >= CURATED_BATCH:
            self._send()

    def _send(self) -> None:
        for value in curated_messages(self.batch, self.settings.curated_format):
            self.producer.produce(self.settings.curated_topic, key=self.key, value=value)
            self.producer.poll(0)
        self.batch = []

    def close(self, what: str = "curated lines", timeout_s: float | None = None) -> None:
        """Send the rest and wait for delivery; BrokerUnavailable if Kafka does not confirm in time."""
        self._send()
        if self.producer.flush(timeout_s or self.settings.request_timeout_s * 6):
            raise BrokerUnavailable(self.settings.bootstrap, f"{what} not delivered in time")
