"""Store and replay benchmarks (issue targets in brackets), printed and written to
bench/results/store_bench.json:

- sink rows/s into chDB (ClickHouseSink: columns + insert, 10k-row batches) beside the bare chDB
  Arrow insert of the same rows in the same run [>= 300k rows/s];
- a session lookup (`hindsight query --session`) on 10M rows: p50/p95/p99 [p95 < 50 ms];
- replay read + filter rate from a real broker [>= 200k records/s].
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from common import bench_broker, machine
from tqdm import tqdm

from connectors.clickhouse import COLUMNS, ClickHouseSink, to_columns
from pipeline.engine.curate import curate
from pipeline.kafka import ensure_topics
from pipeline.ops.workload import generate
from pipeline.replay.run import ReplaySpec, replay
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.query import QueryFilters, run_query
from pipeline.types import RawLine
from pipeline.worker.processor import tune_gc

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 10_000
REPLAY_RUNS = 5


def bench_sink(sink: ClickHouseSink, lines: list[Any]) -> dict[str, float]:
    rows = [curate(RawLine(rec, "logs.raw", 0, i), ["error"], None, 30) for i, rec in enumerate(lines)]
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    start = time.perf_counter()
    for batch in batches:
        sink.write_batch(batch)
        sink.flush()
    sink_s = time.perf_counter() - start
    client = sink.client
    client.command("CREATE TABLE IF NOT EXISTS hindsight.bench_arrow AS hindsight.logs")
    tables = [to_arrow(batch) for batch in batches]  # built outside the timing: the store alone
    start = time.perf_counter()
    for table in tables:
        client.insert_arrow("hindsight.bench_arrow", table)
    arrow_s = time.perf_counter() - start
    return {
        "sink_rows_per_s": len(rows) / sink_s,
        "bare_arrow_insert_rows_per_s": len(rows) / arrow_s,
        "sink_to_arrow_ratio": arrow_s / sink_s,
    }


_S = pa.string()
# the Arrow type of each column of hindsight.logs, in COLUMNS order
ARROW_TYPES = [
    pa.timestamp("ns"),
    pa.timestamp("ns"),
    _S,
    _S,
    _S,
    pa.uint8(),
    _S,
    _S,
    pa.map_(_S, _S),
    _S,
    _S,
    _S,
    _S,
    pa.float64(),
    pa.int32(),
    pa.list_(_S),
    pa.list_(_S),
    _S,
    pa.int64(),
    pa.list_(_S),
    pa.list_(_S),
    pa.uint16(),
    _S,
    pa.uint32(),
    pa.uint64(),
    pa.uint32(),
]


def to_arrow(batch: list[Any]) -> pa.Table:
    cols = to_columns(batch)
    cols[COLUMNS.index("LogAttributes")] = [list(d.items()) for d in cols[COLUMNS.index("LogAttributes")]]
    return pa.table([pa.array(c, type=t) for c, t in zip(cols, ARROW_TYPES, strict=True)], names=COLUMNS)


def bench_lookup(
    sink: ClickHouseSink, total: int, sessions: int = 200_000, queries: int = 200
) -> dict[str, float]:
    client = sink.client
    # A session's lines are close together in time (it lasts minutes), as in production: each
    # session is `per_session` consecutive synthetic lines, spread over the services.
    per_session = max(total // sessions, 1)
    have = int(client.query("SELECT count() FROM hindsight.logs").result_rows[0][0])
    if have < total:
        client.command(
            f"""
            INSERT INTO hindsight.logs (Timestamp, ObservedTimestamp, SeverityText, SeverityNumber,
                ServiceName, Body, SessionId, UserId, Endpoint, TriggerReasons, RetentionDays,
                RawTopic, RawPartition, RawOffset, RawIndex)
            SELECT now64(9) - toIntervalMillisecond(number), now64(9), 'INFO', 9,
                   ['api', 'checkout', 'search', 'auth'][number % 4 + 1],
                   concat('synthetic line ', toString(number)),
                   concat('bench-s', toString(intDiv(number, {per_session}))),
                   concat('u', toString(number % 50000)),
                   ['/api/cart', '/api/pay', '/api/search'][number % 3 + 1], ['error'], 30, 'bench.raw',
                   number % 12, number, 0
            FROM numbers({have}, {total - have})
            """
        )
        client.command("OPTIMIZE TABLE hindsight.logs FINAL")
    rng = random.Random(3)
    timings = []
    for _ in range(queries):
        session = f"bench-s{rng.randrange(sessions // 2, total // per_session)}"  # synthetic ones only
        start = time.perf_counter()
        rows = run_query(client, QueryFilters(session=session, limit=100), "hindsight")
        timings.append((time.perf_counter() - start) * 1000)
        assert rows, session
    timings.sort()
    return {
        "lookup_rows_in_table": float(client.query("SELECT count() FROM hindsight.logs").result_rows[0][0]),
        "lookup_p50_ms": timings[len(timings) // 2],
        "lookup_p95_ms": timings[int(len(timings) * 0.95) - 1],
        "lookup_p99_ms": timings[int(len(timings) * 0.99) - 1],
    }


def bench_replay(lines: list[Any]) -> dict[str, float]:
    with bench_broker() as base:
        settings = base.namespaced(f"bench.{uuid.uuid4().hex[:8]}", wire_format="json")
        ensure_topics(settings)
        pub = Publisher(settings)
        for rec in lines:
            pub.publish(rec)
        pub.flush(60)
        t0 = min(r["timestamp"] for r in lines)
        t1 = max(r["timestamp"] for r in lines) + 1
        spec = ReplaySpec(since_us=t0, until_us=t1, endpoint="/api/checkout")
        tune_gc(settings.worker_gc_threshold)  # as `hindsight replay` does; also stops re-walking `lines`
        results = []
        for _ in tqdm(range(REPLAY_RUNS), desc="replay runs", file=sys.stderr):
            with tempfile.TemporaryDirectory() as tmp:
                results.append(replay(settings, spec, str(Path(tmp) / "replay.jsonl")))
        result = results[0]
        return {
            "replay_runs": float(REPLAY_RUNS),
            "replay_scanned_lines": float(result["scanned_lines"]),
            "replay_matched_lines": float(result["matched_lines"]),
            # read+filter: from the first message read to the last line written (median of the runs)
            "replay_lines_per_s": statistics.median(r["read_lines_per_s"] for r in results),
            "replay_lines_per_s_min": float(min(r["read_lines_per_s"] for r in results)),
            # end to end, with the setup (metadata, retention check, assignment)
            "replay_end_to_end_lines_per_s": statistics.median(r["lines_per_s"] for r in results),
        }


def main() -> None:
    n = int(os.environ.get("BENCH_SINK_ROWS", "200000"))
    total = int(os.environ.get("BENCH_LOOKUP_ROWS", "10000000"))
    lines = generate(sessions=max(n // 40, 1), requests_per_session=6, seed=4).lines[:n]
    out: dict[str, Any] = {
        "machine": machine(),
        "sink_rows": n,
    }
    with tempfile.TemporaryDirectory() as store:
        sink = ClickHouseSink.from_settings(Settings(chdb_path=Path(store), default_retention_days=3650))
        try:
            out.update(bench_sink(sink, lines))
            out.update(bench_lookup(sink, total))
        finally:
            sink.close()
    out.update(bench_replay(lines))
    out["targets"] = {"sink_rows_per_s": 300_000, "lookup_p95_ms": 50, "replay_lines_per_s": 200_000}
    for key, value in out.items():
        print(f"{key:<32} {value:,.1f}" if isinstance(value, float) else f"{key:<32} {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store_bench.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
