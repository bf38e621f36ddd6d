"""The main job: bring up the stack, run worker and sink, publish a workload, show what was kept."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from pipeline.errors import HindsightError
from pipeline.kafka import ensure_topics
from pipeline.ops.services import settings_env
from pipeline.ops.stack import LocalBroker
from pipeline.ops.workload import generate
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_query, remote_summary
from pipeline.store.query import QueryFilters
from pipeline.store.render import format_table
from pipeline.types import CONTEXT_FIELDS

log = logging.getLogger(__name__)


@dataclass
class Child:
    """A worker or sink process started by the demo."""

    name: str
    proc: subprocess.Popen[bytes]
    log_file: Path

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-8:]
            raise HindsightError(f"{self.name} exited with {self.proc.returncode}: " + " | ".join(tail))

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class DemoResult:
    """Figures the demo prints (and returns for tests)."""

    raw_lines: int = 0
    raw_bytes: int = 0
    stored_lines: int = 0
    stored_bytes: int = 0
    expected_lines: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    examples: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)


def demo_settings(base: Settings, run_id: str) -> Settings:
    """A namespace of its own per run (topics, group, store), so runs never mix."""
    home = base.home / "demo"
    return base.namespaced(
        f"demo.{run_id}",
        chdb_path=home / "chdb",
        cache_dir=base.cache_dir or base.home / "cache",
        raw_retention_ms=3_600_000,
        curated_retention_ms=3_600_000,
        dlq_retention_ms=3_600_000,
    )


def start_child(name: str, args: list[str], settings: Settings, log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name}.log"
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.ops.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return Child(name, proc, log_file)


def wait_until(what: str, check: Callable[[], bool], timeout: float, children: list[Child]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            child.check()
        try:
            if check():
                return
        except (ConnectionRefusedError, HindsightError, OSError):
            pass
        time.sleep(0.25)
    raise HindsightError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_demo(base: Settings, sessions: int = 300, out: Callable[[str], None] = print) -> DemoResult:
    run_id = uuid.uuid4().hex[:8]
    settings = demo_settings(base, run_id)
    shutil.rmtree(settings.store_path, ignore_errors=True)
    started_broker = False
    children: list[Child] = []
    log_dir = base.home / "demo" / "logs"
    try:
        if settings.local_broker:
            out(f"starting Kafka {settings.kafka_version} (KRaft) on {settings.bootstrap} ...")
            started_broker = LocalBroker(settings).start()
        else:
            out(f"using Kafka at {settings.bootstrap}")
        ensure_topics(settings)
        children.append(start_child("ingest", ["ingest"], settings, log_dir))
        children.append(start_child("worker", ["worker"], settings, log_dir))
        children.append(start_child("sink", ["sink", "clickhouse"], settings, log_dir))
        wait_until(
            "the sink's query API", lambda: remote_summary(query_api(settings), 2) is not None, 90, children
        )

        work = generate(
            sessions=sessions,
            lookback_s=settings.lookback_s,
            follow_s=settings.follow_s,
            latency_floor_ms=settings.latency_floor_ms,
            run_id=run_id,
        )
        publisher = Publisher(settings)
        for record in tqdm(
            work.lines,
            desc="publishing",
            unit="line",
            file=sys.stderr,
            mininterval=0.2,
            disable=not sys.stderr.isatty(),
        ):
            publisher.publish(record)
        if publisher.flush(30) > 0 or publisher.metrics.failed:
            raise HindsightError(f"publisher could not deliver: {publisher.metrics.last_error}")
        del publisher  # its producer would otherwise keep reconnecting after the broker stops

        result = DemoResult(
            raw_lines=len(work.lines),
            raw_bytes=sum(len(orjson.dumps(r)) for r in work.lines),
            expected_lines=len(work.expected),
        )
        with tqdm(
            total=len(work.expected),
            desc="curated lines queryable",
            unit="line",
            file=sys.stderr,
            mininterval=0.5,
        ) as bar:

            def stored() -> bool:
                n = remote_summary(query_api(settings), 5)["lines"]
                bar.update(n - bar.n)
                return bool(n >= len(work.expected))

            wait_until("curated lines to be queryable", stored, 120, children)

        summary = remote_summary(query_api(settings))
        all_rows = remote_query(query_api(settings), QueryFilters(limit=100_000))
        result.stored_lines = summary["lines"]
        result.stored_bytes = sum(len(orjson.dumps({k: r[k] for k in _RAW_FIELDS})) for r in all_rows)
        result.incidents = summary["incidents"]
        first = result.incidents[0]["session_id"] if result.incidents else work.lines[0]["session_id"]
        # each example is printed as the command that gives exactly those rows
        result.examples = [
            (
                f"hindsight query --session {first} --limit 20",
                remote_query(query_api(settings), QueryFilters(session=first, limit=20)),
            ),
            (
                "hindsight query --level ERROR --limit 5",
                remote_query(query_api(settings), QueryFilters(level="ERROR", limit=5)),
            ),
            (
                "hindsight query --service api-gateway --level WARN --limit 5",
                remote_query(query_api(settings), QueryFilters(service="api-gateway", level="WARN", limit=5)),
            ),
        ]
        _print_summary(result, out)
        kept = {(r["session_id"], r["message"]) for r in all_rows}
        missing = {(s, m) for s, m, _ in work.expected} - kept
        if missing:
            raise HindsightError(f"{len(missing)} expected lines are missing from the store")
        return result
    finally:
        for child in reversed(children):
            child.stop()
        if started_broker:
            out("stopping the Kafka broker this demo started")
            LocalBroker(settings).stop()


# what a stored line holds of the raw line, as the query API names it
_RAW_FIELDS = ("timestamp_us", "service", "level", "message", *CONTEXT_FIELDS, "attributes")


def _print_summary(r: DemoResult, out: Callable[[str], None]) -> None:
    out("")
    out("== log-hindsight demo ==")
    out(f"raw lines published : {r.raw_lines:>9,}   raw bytes (JSON)    : {r.raw_bytes:>11,}")
    out(f"lines stored        : {r.stored_lines:>9,}   stored bytes (JSON) : {r.stored_bytes:>11,}")
    line_ratio = r.stored_lines / r.raw_lines if r.raw_lines else 0
    byte_ratio = r.stored_bytes / r.raw_bytes if r.raw_bytes else 0
    out(f"stored/raw          : {line_ratio:>9.2%} of lines, {byte_ratio:.2%} of bytes")
    out(f"incidents captured  : {len(r.incidents)}")
    for inc in r.incidents:
        out(
            f"  - {inc['service']:<12} {inc['endpoint']:<14} session={inc['session_id']} "
            f"lines={inc['lines']:<3} {inc['message'][:60]}"
        )
    for title, rows in r.examples:
        out("")
        out(f"$ {title}")
        out(format_table(rows))
    out("")
    out("== what next ==")
    out("The demo used topics and a store of its own and stops what it started: the commands above ran")
    out("against them. To keep exploring, run the pipeline for good (each in its own terminal):")
    out("  hindsight stack up && hindsight topics")
    out("  hindsight ingest        hindsight worker        hindsight sink clickhouse")
    out("then publish (any Kafka client to logs.raw, or `hindsight publish < lines.jsonl`) and read:")
    out("  hindsight query --level WARN        hindsight doctor        docs/operations.md")
