"""What the benchmark scripts share: a free port, and a broker of their own (or KAFKA_BOOTSTRAP_SERVERS)."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.ops.stack import LocalBroker
from pipeline.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bench_broker() -> Iterator[Settings]:
    """Settings pointing at a single-node broker started for this benchmark on a free port (stopped
    afterwards), or at the cluster KAFKA_BOOTSTRAP_SERVERS names."""
    base = Settings(home=Path(".hindsight/bench"), cache_dir=Path(".hindsight/cache"))
    broker = None
    if base.local_broker:
        base = base.model_copy(update={"kafka_port": free_port()})
        broker = LocalBroker(base)
        broker.start()
    try:
        yield base
    finally:
        if broker is not None:
            broker.stop()


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"
