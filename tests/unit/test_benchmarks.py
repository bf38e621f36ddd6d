"""The in-process parts of bench/worker_throughput.py run on a small workload and give every figure:
the benchmarks run outside `make test`, so a broken one would otherwise be found only when run."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.ops.workload import generate

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def worker_bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("worker_throughput")
    finally:
        sys.path.remove(str(BENCH))


def test_the_worker_benchmarks_in_process_parts_give_every_figure(worker_bench: ModuleType) -> None:
    lines = generate(sessions=125, requests_per_session=6, seed=3).lines[:5000]
    out: dict[str, float] = {}
    for part in ("bench_serde", "bench_processor", "bench_processor_sessions", "bench_memory"):
        out.update(getattr(worker_bench, part)(lines))
    for name in (
        "processor_json_lines_per_s",
        "processor_sessions_lines_per_s",
        "processor_sessions_no_templates_lines_per_s",
        "processor_sessions_unframed_lines_per_s",
        "processor_sessions_framed_to_unframed_ratio",
        "memory_per_line_bytes",
        "memory_to_encoded_ratio",
        "memory_per_idle_session_bytes",
    ):
        assert math.isfinite(out[name]) and out[name] > 0, name
    # the workload's triggers keep some lines and not all: the path measured is the real one
    assert 0 < out["curated_share"] < 1
