"""The webhook sink behind the real runner and broker: only routed lines, redacted, signed; a
receiver that is down for a while gets everything afterwards, nothing lost."""

from __future__ import annotations

import threading

import orjson
import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from pipeline.kafka import ensure_topics
from pipeline.ops.services import run_sink
from pipeline.settings import Settings
from pipeline.wire.curated import encode_curated
from tests.unit.connectors.test_sinks import Receiver, row

from .helpers import eventually

pytestmark = pytest.mark.integration


def test_webhook_gets_routed_redacted_lines_and_catches_up_after_an_outage(ns: Settings) -> None:
    receiver = Receiver()
    receiver.status = 503  # the customer's service is down when the sink starts
    settings = ns.model_copy(
        update={
            "webhook_url": receiver.url,
            "webhook_secret": SecretStr("k"),
            "redaction": {"webhook": [{"key": "email", "action": "mask"}]},
            "sink_batch_ms": 200,
            "sink_max_backoff_s": 1.0,
        }
    )
    ensure_topics(settings)
    producer = Producer(settings.kafka_client_config())
    rows = [row(i, ["webhook"] if i % 2 else [], email=f"u{i}@x.org") for i in range(40)]
    for i in range(0, 40, 8):
        producer.produce(settings.curated_topic, value=encode_curated(rows[i : i + 8]))
    assert producer.flush(10) == 0
    stop = threading.Event()
    thread = threading.Thread(target=run_sink, args=(settings, "webhook", stop), daemon=True)
    thread.start()
    try:
        # the outage lasts until the sink was refused three times (it retries, with back-off)
        eventually(
            lambda: sum(status == 503 for _, status, _ in receiver.seen) >= 3 or None,
            30,
            "three refused posts",
        )
        assert receiver.got == []
        receiver.status = 200

        def delivered() -> list[dict[str, object]] | None:
            got = [r for _, body in receiver.got for r in orjson.loads(body)]
            return got if len({r["raw_offset"] for r in got}) >= 20 else None

        got = eventually(delivered, 30, "20 routed lines at the webhook")
        assert {r["raw_offset"] for r in got} == {i for i in range(40) if i % 2}  # routed ones only
        assert {r["attributes"]["email"] for r in got} == {"***"}
    finally:
        stop.set()
        thread.join(15)
        receiver.httpd.shutdown()
