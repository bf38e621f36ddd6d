"""The worker's end of the shared-state topic: writes this process's changes, follows everyone's.

Captures, auth-failure counts and endpoint latency baselines must be the same in every worker
process (a security flag in one captures its endpoint in all). They are small and change rarely, so a
one-partition topic of changes that every worker reads whole, in order, without a consumer group, is
enough; the order is what makes a user's auth failures fire once for all processes (see
Hindsight.apply_shared). A Faust GlobalTable would hold the same data, but a table keeps the latest
value per key, where the count needs every change in one order, and its writes cost ~125 us each.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.errors import DecodeError
from pipeline.kafka import producer_config
from pipeline.settings import Settings
from pipeline.wire.shared import decode_change, encode_change

log = logging.getLogger(__name__)


class SharedLog(threading.Thread):
    """Publishes `publish()`ed changes under this process's origin and queues every change read from
    the topic (its own included) for `drain()`; `ready` is set once the topic was read up to where it
    ended at start-up, so the first live line sees the captures already open."""

    def __init__(self, settings: Settings, origin: str | None = None) -> None:
        super().__init__(name="hindsight-shared", daemon=True)
        self.settings = settings
        self.topic = settings.shared_topic
        self.origin = origin or uuid.uuid4().hex[:12]
        self.ready = threading.Event()
        self.invalid = 0
        self._inbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.producer = Producer({**producer_config(settings), "linger.ms": 5})

    def publish(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            self.producer.produce(self.topic, encode_change(change, self.origin), self.origin.encode())
        if changes:
            self.producer.poll(0)

    def drain(self) -> list[dict[str, Any]]:
        """The changes read since the last call, in the topic's order."""
        out = []
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self._stop.set()
        self.producer.flush(5)

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": f"{self.settings.app_id}-shared-{self.origin}",  # never joined: assign()
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            end = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10)[1]
            consumer.assign([TopicPartition(self.topic, 0, -2)])  # -2: the beginning
            if end == 0:
                self.ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        self._inbox.put(decode_change(msg.value()))
                    except DecodeError as exc:
                        self.invalid += 1
                        log.warning("shared state record skipped offset=%s reason=%s", msg.offset(), exc)
                    offset = msg.offset()
                    if offset is not None and offset + 1 >= end:
                        self.ready.set()
        except Exception:
            log.exception("shared state reader stopped topic=%s", self.topic)
        finally:
            consumer.close()
