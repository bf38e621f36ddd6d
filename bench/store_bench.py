"""Store and replay benchmarks (issue targets in brackets), printed and written to
bench/results/store_bench.json:

- sink rows/s into chDB (ClickHouseSink: columns + insert, 10k-row batches) beside the bare chDB
  Arrow insert of the same rows in the same run [>= 300k rows/s];
- a session lookup (`hindsight query --session`) and a one-minute time-range read on 10M rows:
  p50/p95/p99 [lookup p95 < 50 ms], on the table with history and beside it the table before it;
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
from pipeline.store.clickhouse import MIGRATIONS, _statements
from pipeline.store.query import QueryFilters, run_query
from pipeline.types import RawLine
from pipeline.worker.processor import tune_gc

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 10_000
MINUTE = 60_000_000
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
SELECTION = pa.struct(
    [
        ("TriggerId", _S),
        ("Reasons", pa.list_(_S)),
        ("RuleIds", pa.list_(_S)),
        ("Tags", pa.list_(_S)),
        ("Routes", pa.list_(_S)),
        ("RetentionDays", pa.uint16()),
    ]
)
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
    pa.list_(_S),
    pa.list_(_S),
    pa.list_(SELECTION),
]


def to_arrow(batch: list[Any]) -> pa.Table:
    cols = to_columns(batch)
    cols[COLUMNS.index("LogAttributes")] = [list(d.items()) for d in cols[COLUMNS.index("LogAttributes")]]
    names = [f.name for f in SELECTION]
    at = COLUMNS.index("Selections")
    cols[at] = [[dict(zip(names, sel, strict=True)) for sel in line] for line in cols[at]]
    return pa.table([pa.array(c, type=t) for c, t in zip(cols, ARROW_TYPES, strict=True)], names=COLUMNS)


def fill(client: Any, database: str, total: int, per_session: int) -> None:
    """`total` synthetic lines in <database>.logs; a session's lines are close together in time (it
    lasts minutes), as in production: each session is `per_session` consecutive lines."""
    have = int(client.query(f"SELECT count() FROM {database}.logs").result_rows[0][0])
    if have >= total:
        return
    history = database == "hindsight"  # the current table: one selection per line, as the sink writes
    extra_cols = ", TriggerIds, Selections" if history else ""
    trigger = f"concat('t', toString(intDiv(number, {per_session})))"
    extra_vals = f", [{trigger}], [({trigger}, ['error'], [], [], [], 30)]" if history else ""
    client.command(
        f"""
        INSERT INTO {database}.logs (Timestamp, ObservedTimestamp, SeverityText, SeverityNumber,
            ServiceName, Body, SessionId, UserId, Endpoint, TriggerReasons, TriggerId, RetentionDays,
            RawTopic, RawPartition, RawOffset, RawIndex{extra_cols})
        SELECT now64(9) - toIntervalMillisecond(number), now64(9), 'INFO', 9,
               ['api', 'checkout', 'search', 'auth'][number % 4 + 1],
               concat('synthetic line ', toString(number)),
               concat('bench-s', toString(intDiv(number, {per_session}))),
               concat('u', toString(number % 50000)),
               ['/api/cart', '/api/pay', '/api/search'][number % 3 + 1], ['error'],
               concat('t', toString(intDiv(number, {per_session}))), 30, 'bench.raw',
               number % 12, number, 0{extra_vals}
        FROM numbers({have}, {total - have})
        """
    )
    client.command(f"OPTIMIZE TABLE {database}.logs FINAL")


def before_history(client: Any) -> None:
    """Database `before`: hindsight.logs as it was before 004_history (ReplacingMergeTree, one
    selection per line), with TriggerIds as an alias so the same query code reads both."""
    client.command("CREATE DATABASE IF NOT EXISTS before")
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.stem < "004":
            for statement in _statements(path.read_text().replace("{db}", "before")):
                client.command(statement)
    client.command(
        "ALTER TABLE before.logs ADD COLUMN IF NOT EXISTS TriggerIds Array(String) "
        "ALIAS if(TriggerId = '', [], [TriggerId])"
    )


def bench_lookup(
    sink: ClickHouseSink, total: int, sessions: int = 200_000, queries: int = 200
) -> dict[str, float]:
    """A session lookup and a one-minute time-range read, on the table with history (AggregatingMergeTree,
    004_history) and on the table before it (ReplacingMergeTree), measured interleaved in one run."""
    client = sink.client
    per_session = max(total // sessions, 1)
    before_history(client)
    for database in ("hindsight", "before"):
        fill(client, database, total, per_session)
    # the period both tables cover (each was filled up to the moment of its own insert)
    ends = [
        client.query(
            f"SELECT toUnixTimestamp64Micro(min(Timestamp)), toUnixTimestamp64Micro(max(Timestamp)) "
            f"FROM {database}.logs WHERE RawTopic = 'bench.raw'"
        ).result_rows[0]
        for database in ("hindsight", "before")
    ]
    first_us, last_us = max(e[0] for e in ends), min(e[1] for e in ends)
    rng = random.Random(3)
    timings: dict[str, list[float]] = {}
    for _ in range(queries):
        session = f"bench-s{rng.randrange(sessions // 2, total // per_session)}"  # synthetic ones only
        since = rng.randrange(first_us, last_us - MINUTE)
        for database in ("hindsight", "before"):
            for kind, filters in (
                ("lookup", QueryFilters(session=session, limit=100)),
                (
                    "range",
                    QueryFilters(service="api", since_us=since, until_us=since + 60_000_000, limit=1000),
                ),
            ):
                start = time.perf_counter()
                rows = run_query(client, filters, database)
                timings.setdefault(f"{kind}_{database}", []).append((time.perf_counter() - start) * 1000)
                assert rows, (kind, database, filters)
    out = {
        "lookup_rows_in_table": float(client.query("SELECT count() FROM hindsight.logs").result_rows[0][0])
    }
    for key, values in timings.items():
        values.sort()
        name = key.replace("_hindsight", "").replace("_before", "_before_history")
        out[f"{name}_p50_ms"] = values[len(values) // 2]
        out[f"{name}_p95_ms"] = values[int(len(values) * 0.95) - 1]
        out[f"{name}_p99_ms"] = values[int(len(values) * 0.99) - 1]
    return out


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
