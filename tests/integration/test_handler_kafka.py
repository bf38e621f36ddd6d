"""The logging handler against the real broker: two lines to attach, lines arrive decoded."""

from __future__ import annotations

import logging

import pytest

from pipeline.kafka import ensure_topics
from pipeline.publisher import HindsightHandler
from pipeline.serde import RawDecoder
from pipeline.settings import Settings

from .helpers import consume_all

pytestmark = pytest.mark.integration


def test_handler_publishes_to_raw_topic(ns: Settings) -> None:
    ensure_topics(ns)
    handler = HindsightHandler(service="shop", settings=ns)
    logger = logging.getLogger("shop.test")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.debug("cart loaded", extra={"session_id": "h1", "endpoint": "/cart"})
        try:
            raise ValueError("card declined")
        except ValueError:
            logger.exception("payment failed", extra={"session_id": "h1", "status_code": 502})
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert handler.dropped == 0
    msgs = consume_all(ns, ns.raw_topic, expect=1)
    records = [r for m in msgs for r in RawDecoder(1 << 20).decode(m.value())[0]]
    assert [r["level"] for r in records] == ["DEBUG", "ERROR"]
    assert records[1]["status_code"] == 502 and "ValueError: card declined" in records[1]["message"]
    assert {m.key() for m in msgs} == {b"h1"}
