"""Publisher grouping and the logging handler, with an in-memory producer double (no Kafka here)."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import murmur2

from pipeline.settings import Settings
from pipeline.sources.publisher import HindsightHandler, Publisher, to_log_record
from pipeline.wire.raw import RawDecoder


class FakeProducer:
    """Records what would be produced; knows the raw topic's partition count like a broker would."""

    def __init__(self, partitions: int = 4) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.partitions: list[int] = []
        self.n = partitions

    def produce(
        self, topic: str, value: bytes, key: bytes | None, partition: int, on_delivery: Any = None
    ) -> None:
        self.sent.append((key, value))
        self.partitions.append(partition)

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        meta = SimpleNamespace(error=None, partitions={p: None for p in range(self.n)})
        return SimpleNamespace(topics={topic: meta})

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def decode(value: bytes) -> list[str]:
    records, errors = RawDecoder(1 << 20).decode(value)
    assert errors == []
    return [r["message"] for r in records]


def test_groups_lines_per_partition_until_flush() -> None:
    fake = FakeProducer(partitions=2)
    pub = Publisher(Settings(publish_linger_ms=60_000), producer=fake)  # type: ignore[arg-type]
    sessions = [f"s-{i}" for i in range(8)]
    for i in range(3):
        for s in sessions:
            pub.publish_obj({"service": "a", "level": "INFO", "message": f"{s}/{i}", "session_id": s})
    assert fake.sent == []
    pub.flush()
    assert sorted(fake.partitions) == [0, 1]  # one message per partition
    for (key, value), part in zip(fake.sent, fake.partitions, strict=True):
        assert key is None  # several sessions in one message
        lines = decode(value)
        for s in sessions:
            mine = [m for m in lines if m.startswith(f"{s}/")]
            # every line of a session in its murmur2 partition, in order
            assert mine == ([f"{s}/{i}" for i in range(3)] if pub.partition(s) == part else [])


def test_partition_matches_the_java_client_and_single_key_messages_keep_their_key() -> None:
    fake = FakeProducer(partitions=6)
    pub = Publisher(Settings(publish_linger_ms=60_000), producer=fake)  # type: ignore[arg-type]
    # the Java client's murmur2 of these keys (Kafka's own test vectors), made positive, modulo 6
    for key, java_hash in (("21", -973932308), ("foobar", -790332482)):
        assert murmur2(key.encode()) & 0xFFFFFFFF == java_hash & 0xFFFFFFFF
        assert pub.partition(key) == (java_hash & 0x7FFFFFFF) % 6
    pub.publish_obj({"service": "a", "level": "INFO", "message": "only", "session_id": "solo"})
    pub.flush()
    assert fake.sent[0][0] == b"solo" and fake.partitions == [pub.partition("solo")]


def test_full_group_sent_at_once_and_linger_expires() -> None:
    fake = FakeProducer()
    pub = Publisher(Settings(publish_linger_ms=30, publish_batch_lines=2), producer=fake)  # type: ignore[arg-type]
    for i in range(3):
        pub.publish_obj({"service": "a", "level": "INFO", "message": f"m{i}", "session_id": "s"})
    assert [decode(v) for _, v in fake.sent] == [["m0", "m1"]]
    time.sleep(0.05)
    pub.tick()
    assert [decode(v) for _, v in fake.sent] == [["m0", "m1"], ["m2"]]


def test_group_bytes_bounded_below_the_record_limit() -> None:
    fake = FakeProducer()
    pub = Publisher(Settings(publish_linger_ms=60_000, max_record_bytes=64 * 1024), producer=fake)  # type: ignore[arg-type]
    for i in range(40):
        pub.publish_obj({"service": "a", "level": "INFO", "message": "x" * 4000, "session_id": f"s{i % 3}"})
    pub.flush()
    assert len(fake.sent) > 1 and all(len(v) < 64 * 1024 for _, v in fake.sent)
    assert sum(len(decode(v)) for _, v in fake.sent) == 40


def test_stdlib_record_mapping_uses_extra_fields() -> None:
    logger = logging.getLogger("shop.checkout")
    rec = logger.makeRecord(
        "shop.checkout",
        logging.ERROR,
        __file__,
        1,
        "payment failed for %s",
        ("order-1",),
        None,
        extra={"session_id": "s1", "user_id": "u1", "latency_ms": 812.0, "status_code": 502, "cart": 3},
    )
    out = to_log_record(rec, "checkout")
    assert out["level"] == "ERROR" and out["message"] == "payment failed for order-1"
    assert out["session_id"] == "s1" and out["status_code"] == 502 and out["latency_ms"] == 812.0
    assert out["attributes"]["cart"] == "3" and out["attributes"]["logger"] == "shop.checkout"


class BlockingPublisher(Publisher):
    """A publisher stuck on a dead network: publish() blocks until released."""

    def __init__(self) -> None:
        super().__init__(Settings(), producer=FakeProducer())  # type: ignore[arg-type]
        self.release = threading.Event()

    def publish(self, record: Any) -> None:
        self.release.wait(5)
        super().publish(record)


def test_handler_never_blocks_and_counts_drops() -> None:
    pub = BlockingPublisher()
    handler = HindsightHandler("svc", Settings(handler_queue_size=10), publisher=pub)
    logger = logging.getLogger("test.handler.nonblocking")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(200):  # the publisher is stuck: an emit that waited for room would wait 5 s a line
            logger.warning("line %d", i)
        # never blocked: what did not fit the queue of 10 (+1 taken by the worker thread) was dropped
        assert 180 <= handler.dropped <= 190
        pub.release.set()
        handler.flush()
        sent = sum(len(decode(v)) for _, v in pub.producer.sent)  # type: ignore[attr-defined]
        assert sent + handler.dropped == 200
    finally:
        logger.removeHandler(handler)
        handler.close()
