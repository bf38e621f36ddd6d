"""Publisher grouping and the logging handler, with an in-memory producer double (no Kafka here)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pipeline.publisher import HindsightHandler, Publisher, to_log_record
from pipeline.serde import RawDecoder
from pipeline.settings import Settings


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any = None) -> None:
        self.sent.append((key, value))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def decode(value: bytes) -> list[str]:
    records, errors = RawDecoder(1 << 20).decode(value)
    assert errors == []
    return [r["message"] for r in records]


def test_groups_lines_per_session_until_flush() -> None:
    fake = FakeProducer()
    pub = Publisher(Settings(publish_linger_ms=60_000), producer=fake)  # type: ignore[arg-type]
    for i in range(3):
        pub.publish_obj({"service": "a", "level": "INFO", "message": f"a{i}", "session_id": "s-a"})
        pub.publish_obj({"service": "b", "level": "INFO", "message": f"b{i}", "session_id": "s-b"})
    assert fake.sent == []
    pub.flush()
    by_key = {k: decode(v) for k, v in fake.sent}
    assert by_key == {b"s-a": ["a0", "a1", "a2"], b"s-b": ["b0", "b1", "b2"]}


def test_full_group_sent_at_once_and_linger_expires() -> None:
    fake = FakeProducer()
    pub = Publisher(Settings(publish_linger_ms=30, publish_batch_lines=2), producer=fake)  # type: ignore[arg-type]
    for i in range(3):
        pub.publish_obj({"service": "a", "level": "INFO", "message": f"m{i}", "session_id": "s"})
    assert [decode(v) for _, v in fake.sent] == [["m0", "m1"]]
    time.sleep(0.05)
    pub.tick()
    assert [decode(v) for _, v in fake.sent] == [["m0", "m1"], ["m2"]]


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
        started = time.monotonic()
        for i in range(200):
            logger.warning("line %d", i)
        assert time.monotonic() - started < 1.0  # 200 emits while the publisher is stuck
        assert 180 <= handler.dropped <= 190  # queue of 10 (+1 taken by the worker thread)
        pub.release.set()
        handler.flush()
        sent = sum(len(decode(v)) for _, v in pub.producer.sent)  # type: ignore[attr-defined]
        assert sent + handler.dropped == 200
    finally:
        logger.removeHandler(handler)
        handler.close()
