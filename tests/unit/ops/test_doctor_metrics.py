"""`hindsight doctor` reads the worker's /metrics: evictions that cut the lookback are a warning that
names the lookback left; a worker that keeps it whole is OK. Real collector, real HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.ops.doctor import OK, WARN, _metrics
from pipeline.settings import Settings
from pipeline.wire.sessions import encode_sessions
from pipeline.worker.metrics import WorkerCollector
from pipeline.worker.processor import RawProcessor
from tests.conftest import free_port

T0 = 1_790_000_000_000_000


def feed(proc: RawProcessor, sessions: int, lines: int) -> None:
    """`lines` lines of ~300 bytes over `sessions` sessions, 10 ms of event time apart."""
    batch = []
    for i in range(lines):
        batch.append(
            {
                "timestamp": T0 + i * 10_000,
                "service": "svc",
                "level": "DEBUG",
                "message": "x" * 200,
                "session_id": f"s{i % sessions}",
                "raw_topic": "logs.raw",
                "raw_partition": 0,
                "raw_offset": i,
                "raw_index": 0,
            }
        )
    for offset, start in enumerate(range(0, lines, 100)):
        proc.handle(proc.sessions_topic, 0, offset, encode_sessions(batch[start : start + 100]))


@pytest.fixture
def served() -> Iterator[tuple[Settings, RawProcessor]]:
    from pipeline.metrics import serve

    settings = Settings(memory_budget_mb=1, lookback_s=60, metrics_port=free_port(), metrics_host="127.0.0.1")
    proc = RawProcessor(settings)
    server = serve(settings, WorkerCollector(proc))
    try:
        yield settings, proc
    finally:
        server.shutdown()


def test_doctor_warns_with_the_lookback_left_when_the_worker_evicts(
    served: tuple[Settings, RawProcessor],
) -> None:
    settings, proc = served
    feed(proc, sessions=50, lines=1000)  # ~0.5 MB: within the budget
    check = _metrics(settings, 3.0)
    assert check.status == OK and "lookback 60 s kept whole" in check.detail, check
    feed(proc, sessions=4000, lines=8000)  # ~5 MB over 80 s of event time: sessions are evicted
    stats = proc.stats()
    assert stats.windows.evicted_sessions > 0
    assert 0 < stats.effective_lookback_us < stats.lookback_us
    check = _metrics(settings, 3.0)
    assert check.status == WARN, check
    assert f"effective lookback {stats.effective_lookback_us / 1e6:.0f} s of 60 s" in check.detail
