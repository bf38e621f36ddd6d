"""The logging handler against the real broker: two lines to attach, lines arrive decoded."""

from __future__ import annotations

import logging

import pytest

from pipeline.kafka import ensure_topics
from pipeline.settings import Settings
from pipeline.sources.publisher import HindsightHandler
from pipeline.wire.raw import RawDecoder

from .helpers import consume_all

pytestmark = pytest.mark.integration


def shop_logger(ns: Settings, name: str, level: int) -> tuple[HindsightHandler, logging.Logger]:
    """A logger of its own whose only handler publishes to the namespace's raw topic."""
    ensure_topics(ns)
    handler = HindsightHandler(service="shop", settings=ns)
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(handler)
    return handler, logger


def test_handler_publishes_to_raw_topic(ns: Settings) -> None:
    handler, logger = shop_logger(ns, "shop.test", logging.DEBUG)
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


def _records(ns: Settings, expect: int) -> list[dict[str, object]]:
    msgs = consume_all(ns, ns.raw_topic, expect=expect)
    return [dict(r) for m in msgs for r in RawDecoder(1 << 20).decode(m.value())[0]]


def test_structlog_processor_with_bound_context(ns: Settings) -> None:
    import structlog

    from pipeline.sources.integrations import HindsightProcessor
    from pipeline.sources.logcontext import bind, log_context

    ensure_topics(ns)
    processor = HindsightProcessor("checkout", settings=ns)
    rendered: list[str] = []
    logger = structlog.wrap_logger(
        None,
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            processor,
            structlog.processors.JSONRenderer(),
            lambda _l, _m, text: rendered.append(text) or "",  # type: ignore[func-returns-value]
        ],
    )
    try:
        with log_context(session_id="st-1", endpoint="/pay"):
            bind(user_id="u-42")
            logger.debug("cart loaded", items=3)
            logger.error("payment failed", status_code=502, latency_ms=812.0, tenant={"id": 7})
        logger.info("outside any request")
        processor.flush()
    finally:
        processor.close()
    assert processor.shipper.dropped == 0 and processor.shipper.invalid == 0
    assert len(rendered) == 3 and '"event": "cart loaded"' in rendered[0]  # the chain went on unchanged
    by = {r["message"]: r for r in _records(ns, expect=2)}  # partitions interleave: match by message
    debug, error, outside = by["cart loaded"], by["payment failed"], by["outside any request"]
    assert (debug["level"], debug["message"], debug["session_id"], debug["user_id"]) == (
        "DEBUG",
        "cart loaded",
        "st-1",
        "u-42",
    )
    assert debug["endpoint"] == "/pay" and debug["attributes"] == {"items": "3"}
    assert error["level"] == "ERROR" and error["status_code"] == 502 and error["latency_ms"] == 812.0
    assert error["attributes"] == {"tenant": '{"id":7}'}
    assert outside["session_id"] is None and outside["service"] == "checkout"


def test_loguru_sink_with_contextualize_and_exceptions(ns: Settings) -> None:
    from loguru import logger

    from pipeline.sources.integrations import HindsightLoguruSink
    from pipeline.sources.logcontext import log_context

    ensure_topics(ns)
    sink = HindsightLoguruSink("billing", settings=ns)
    sink_id = logger.add(sink, level="TRACE")
    try:
        with log_context(session_id="lg-1"), logger.contextualize(user_id="u-9", request_kind="api"):
            logger.trace("deep detail")
            logger.success("invoice built")
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError:
                logger.exception("invoice failed")
        sink.flush()
    finally:
        logger.remove(sink_id)
        sink.close()
    trace, success, failed = _records(ns, expect=1)
    assert [trace["level"], success["level"], failed["level"]] == ["TRACE", "INFO", "ERROR"]
    assert {r["session_id"] for r in (trace, success, failed)} == {"lg-1"}
    assert {r["user_id"] for r in (trace, success, failed)} == {"u-9"}
    assert "ZeroDivisionError" in str(failed["message"])
    attrs = failed["attributes"]
    assert isinstance(attrs, dict) and attrs["request_kind"] == "api" and attrs["code.function"]


def test_stdlib_handler_takes_the_bound_context(ns: Settings) -> None:
    from pipeline.sources.logcontext import log_context

    handler, logger = shop_logger(ns, "shop.ctx", logging.INFO)
    try:
        with log_context(session_id="ctx-1", user_id="u-1"):
            logger.info("inside", extra={"user_id": "u-explicit"})
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    [inside] = _records(ns, expect=1)
    assert inside["session_id"] == "ctx-1" and inside["user_id"] == "u-explicit"  # explicit wins
