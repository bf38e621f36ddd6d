"""Shared fixtures: one real Kafka broker per test session (or KAFKA_BOOTSTRAP_SERVERS), namespaces."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def free_port(pair: bool = False) -> int:
    """A free port on 127.0.0.1 (and port + 1 free too when pair is set)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair or port >= 65535:
            return port
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Base settings pointing at a real broker: KAFKA_BOOTSTRAP_SERVERS, else one started here."""
    home = tmp_path_factory.mktemp("hindsight-home")
    cache = REPO / ".hindsight" / "cache"
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield Settings(home=home, cache_dir=cache)
        return
    from pipeline.stack import LocalBroker

    settings = Settings(home=home, cache_dir=cache, kafka_port=free_port(pair=True), kafka_heap="512m")
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings
    finally:
        broker.stop()


@pytest.fixture
def ns(kafka: Settings, tmp_path: Path) -> Settings:
    """Settings with topics, groups, store and ports of this test alone."""
    run = uuid.uuid4().hex[:8]
    return kafka.namespaced(
        f"t{run}",
        chdb_path=tmp_path / "chdb",
        query_port=free_port(),
        partitions=3,
        publish_linger_ms=20,
    )
