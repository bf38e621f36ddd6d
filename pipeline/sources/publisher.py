"""Publishing log lines to logs.raw: a grouping producer, a logging.Handler, and JSON-lines input."""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.errors import DecodeError, PublishError
from pipeline.kafka import producer_config
from pipeline.settings import Settings
from pipeline.sources.logcontext import current
from pipeline.types import CONTEXT_FIELDS, Level, LogRecord, session_key
from pipeline.wire.raw import RawEncoder, iter_json_lines
from pipeline.wire.records import normalize
from pipeline.wire.registry import from_settings as registry_from_settings

log = logging.getLogger(__name__)


@dataclass
class PublisherMetrics:
    """Counters of the publisher (hindsight_publisher_*_total)."""

    lines: int = 0
    messages: int = 0
    bytes: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str = ""


class _Group:
    """Lines waiting for one partition: sent as one raw message when full or old."""

    __slots__ = ("bytes", "key", "records", "since")

    def __init__(self, since: float, key: str) -> None:
        self.since = since
        self.key: str | None = key  # the message key while every line has the same one, else None
        self.records: list[LogRecord] = []
        self.bytes = 0


class Publisher:
    """Groups the lines bound for each raw partition for up to linger_ms into one raw message.

    One Kafka message per batch of lines amortises the per-message cost downstream (a Faust agent
    spends ~60 us per message whatever its size). A line's partition is the Java client's
    murmur2 hash of its session key, so lines of one session from any producer that keys by
    session (Java clients, aiokafka, librdkafka with partitioner=murmur2_random) meet in one
    partition, in order (idempotent producer). A message whose lines share one key carries it;
    a message mixing sessions carries no key. Thread-safe: the logging handler's thread and
    callers may publish concurrently.
    """

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings
        registry = registry_from_settings(settings)
        self.encoder = RawEncoder(settings.wire_format, registry, settings.raw_topic)
        self.producer = producer or Producer(producer_config(settings))
        self.topic = settings.raw_topic
        self.linger_s = settings.publish_linger_ms / 1000
        self.max_lines = settings.publish_batch_lines
        # stay well below the worker's size limit; a line costs its message plus ~400 bytes of fields
        self.max_bytes = settings.max_record_bytes // 2
        self.metrics = PublisherMetrics()
        self._groups: dict[int, _Group] = {}
        self._partitions: int | None = None
        self._partition_of: dict[str, int] = {}
        self._lock = threading.Lock()

    def partition_count(self) -> int:
        """Partitions of the raw topic, from the cluster's metadata (once)."""
        if self._partitions is None:
            try:
                meta = self.producer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            except KafkaException as exc:
                raise PublishError(f"cannot read metadata of {self.topic}: {exc}") from exc
            if meta is None or meta.error is not None or not meta.partitions:
                raise PublishError(f"topic {self.topic} does not exist (create it: hindsight topics create)")
            self._partitions = len(meta.partitions)
        return self._partitions

    def partition(self, key: str) -> int:
        """The partition of a session key: murmur2, as the Java client's default partitioner."""
        part = self._partition_of.get(key)
        if part is None:
            if len(self._partition_of) > 100_000:
                self._partition_of.clear()
            part = self._partition_of[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % self.partition_count()
        return part

    def publish(self, record: LogRecord) -> None:
        """Queue one complete record (see wire.raw.normalize); sends when its group is full or old."""
        key = session_key(record)
        part = self.partition(key)
        now = time.monotonic()
        ready: list[tuple[int, _Group]] = []
        with self._lock:
            group = self._groups.get(part)
            if group is None:
                group = self._groups[part] = _Group(now, key)
            elif group.key != key:
                group.key = None
            group.records.append(record)
            group.bytes += len(record["message"]) + 400
            self.metrics.lines += 1
            if len(group.records) >= self.max_lines or group.bytes >= self.max_bytes or self.linger_s == 0:
                ready.append((part, self._groups.pop(part)))
            ready.extend(self._take_expired(now))
        self._send(ready)
        self.producer.poll(0)

    def publish_obj(self, obj: object) -> None:
        """Validate a loose object (JSON dict) and publish it; raises DecodeError if unusable."""
        self.publish(normalize(obj))

    def tick(self) -> None:
        """Send groups whose linger has passed; call periodically when idle."""
        with self._lock:
            ready = self._take_expired(time.monotonic())
        self._send(ready)
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Send every group and wait for delivery; returns messages still undelivered."""
        with self._lock:
            ready = list(self._groups.items())
            self._groups.clear()
        self._send(ready)
        return int(self.producer.flush(timeout))

    def _take_expired(self, now: float) -> list[tuple[int, _Group]]:
        # groups are kept in creation order, so the expired ones are a prefix: stop at the first young one
        expired = []
        for part, group in self._groups.items():
            if now - group.since < self.linger_s:
                break
            expired.append(part)
        return [(p, self._groups.pop(p)) for p in expired]

    def _send(self, ready: list[tuple[int, _Group]]) -> None:
        for part, group in ready:
            value = self.encoder.encode(group.records)
            key = group.key.encode() if group.key is not None else None
            while True:
                try:
                    self.producer.produce(
                        self.topic, value=value, key=key, partition=part, on_delivery=self._delivered
                    )
                    break
                except BufferError:
                    # local queue full: serve delivery reports until there is room (backpressure)
                    self.producer.poll(0.1)
            self.metrics.messages += 1
            self.metrics.bytes += len(value)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.metrics.delivered += 1
        else:
            self.metrics.failed += 1
            self.metrics.last_error = str(err)
            log.error("delivery failed topic=%s error=%s", msg.topic(), err)

    def close(self, timeout: float = 30.0) -> int:
        return self.flush(timeout)


def publish_json_lines(
    publisher: Publisher,
    lines: Iterable[str | bytes],
    on_error: Callable[[int, DecodeError], None] | None = None,
    on_line: Callable[[], None] | None = None,
) -> tuple[int, int]:
    """Publish JSON lines; invalid ones are reported (not sent). Returns (published, rejected)."""
    published = rejected = 0
    for number, obj in iter_json_lines(lines):
        try:
            if isinstance(obj, DecodeError):
                raise obj
            publisher.publish_obj(obj)
            published += 1
        except DecodeError as exc:
            rejected += 1
            if on_error is not None:
                on_error(number, exc)
        if on_line is not None:
            on_line()
    return published, rejected


# ----------------------------------------------------------------------------------------------
# stdlib logging integration
# ----------------------------------------------------------------------------------------------

_LEVELS = {
    logging.DEBUG: Level.DEBUG,
    logging.INFO: Level.INFO,
    logging.WARNING: Level.WARN,
    logging.ERROR: Level.ERROR,
    logging.CRITICAL: Level.FATAL,
}
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def to_log_record(rec: logging.LogRecord, service: str) -> LogRecord:
    """A stdlib LogRecord as our record; the bound log context, then `extra={...}`, fill the fields."""
    level = _LEVELS.get(rec.levelno) or (Level.TRACE if rec.levelno < logging.DEBUG else Level.FATAL)
    message = rec.getMessage()
    if rec.exc_info:
        message = message + "\n" + "".join(traceback.format_exception(*rec.exc_info))
    bound = getattr(rec, _BOUND, None) or {}
    extra = {k: v for k, v in vars(rec).items() if k not in _STD_ATTRS and k != _BOUND}
    return build_record(
        service, level.name, message, int(rec.created * 1_000_000), {**bound, **extra}, {"logger": rec.name}
    )


_BOUND = "_hindsight_context"


def build_record(
    service: str,
    level: str,
    message: str,
    timestamp_us: int,
    fields: dict[str, Any],
    attributes: dict[str, Any] | None = None,
) -> LogRecord:
    """Our record from an integration's parts: context fields lifted, everything else an attribute."""
    obj: dict[str, Any] = {
        "timestamp": timestamp_us,
        "service": service,
        "level": level,
        "message": message,
        "attributes": dict(attributes or {}),
    }
    for key, value in fields.items():
        if key in CONTEXT_FIELDS:
            obj[key] = value
        elif value is not None:
            obj["attributes"][key] = value if isinstance(value, str) else _text(value)
    return normalize(obj)


def _text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return str(value)


class Shipper:
    """Hands lines to a Publisher from a daemon thread so that logging never blocks the application.

    submit() only puts (item, convert) on a bounded queue; the thread converts and publishes. When the
    queue is full the line is not queued and is counted in `dropped`; lines that do not make a valid
    record are counted in `invalid` (both logged as warnings, at most once a minute).
    """

    def __init__(self, settings: Settings | None = None, publisher: Publisher | None = None) -> None:
        self.settings = settings or Settings()
        self.publisher = publisher or Publisher(self.settings)
        self.dropped = 0
        self.invalid = 0
        self._warned_at: float | None = None  # not 0.0: monotonic() may be small after boot
        self._queue: queue.Queue[tuple[Any, Callable[[Any], LogRecord]] | None] = queue.Queue(
            self.settings.handler_queue_size
        )
        self._thread = threading.Thread(target=self._run, name="hindsight-shipper", daemon=True)
        self._thread.start()

    def submit(self, item: Any, convert: Callable[[Any], LogRecord]) -> None:
        try:
            self._queue.put_nowait((item, convert))
        except queue.Full:
            self.dropped += 1
            self._warn("queue full")

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "log lines not shipped reason=%s dropped=%s invalid=%s", what, self.dropped, self.invalid
            )

    def _run(self) -> None:
        tick = max(self.publisher.linger_s / 2, 0.005)
        while True:
            try:
                entry = self._queue.get(timeout=tick)
            except queue.Empty:
                self.publisher.tick()
                continue
            if entry is None:
                self._queue.task_done()
                return
            try:
                self.publisher.publish(entry[1](entry[0]))
            except DecodeError:
                self.invalid += 1
                self._warn("invalid line")
            except Exception:
                self.dropped += 1
                self._warn("publish failed")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self.publisher.flush(max(deadline - time.monotonic(), 0.1))

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            self._queue.put(None)
            self._thread.join(5)
            self.publisher.flush(5)


class HindsightHandler(logging.Handler):
    """A logging.Handler that never blocks the application (see Shipper); the bound log context
    (pipeline.sources.logcontext) is captured in emit(), in the application's thread.

        handler = HindsightHandler(service="checkout", settings=Settings())
        logging.getLogger().addHandler(handler)
    """

    def __init__(
        self,
        service: str,
        settings: Settings | None = None,
        publisher: Publisher | None = None,
        level: int = logging.NOTSET,
        shipper: Shipper | None = None,
    ) -> None:
        super().__init__(level)
        self.service = service
        self.shipper = shipper or Shipper(settings, publisher)
        self.settings = self.shipper.settings
        self.publisher = self.shipper.publisher

    @property
    def dropped(self) -> int:
        return self.shipper.dropped

    @property
    def invalid(self) -> int:
        return self.shipper.invalid

    def emit(self, record: logging.LogRecord) -> None:
        bound = current()
        if bound:
            setattr(record, _BOUND, bound)
        self.shipper.submit(record, self._convert)

    def _convert(self, record: logging.LogRecord) -> LogRecord:
        return to_log_record(record, self.service)

    def flush(self, timeout: float = 10.0) -> None:
        self.shipper.flush(timeout)

    def close(self) -> None:
        self.shipper.close()
        super().close()
