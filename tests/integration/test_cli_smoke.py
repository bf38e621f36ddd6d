"""Every subcommand run as a user runs it (a real process, settings from the environment) against the
real broker and a running pipeline: publish, query in each format and with SQL, replay to a file,
capture, rules, doctor, migrate, archive, the file sink, the api and otlp servers, stack fetch/status,
and a worker stopped with SIGTERM and started again."""

from __future__ import annotations

import csv
import gzip
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from pipeline.ops.demo import start_child
from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from tests.conftest import free_port
from tests.integration.helpers import eventually, pipeline_running

pytestmark = pytest.mark.integration
S = 1_000_000


def cli(settings: Settings, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.ops.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **settings_env(settings)},
    )


def ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout.decode()[-2000:], proc.stderr.decode()[-2000:])
    return proc.stdout.decode()


def lines_of(session: str, user: str, n: int, error_at: int) -> bytes:
    now = time.time_ns() // 1000
    return b"\n".join(
        orjson.dumps(
            {"timestamp": now - (n - i) * 10_000, "service": "cli",
             "level": "ERROR" if i == error_at else "DEBUG", "message": f"{session} step {i}",
             "session_id": session, "user_id": user, "endpoint": "/cli"}
        )
        for i in range(n)
    )  # fmt: skip


def stored(settings: Settings, *args: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in ok(cli(settings, "query", *args, "--format", "jsonl")).splitlines() if x]


def test_the_commands_against_a_running_pipeline(ns: Settings, tmp_path: Path) -> None:
    settings = ns.model_copy(update={"api_token": SecretStr("smoke-token"), "api_port": free_port()})
    session, user = f"cli-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    with pipeline_running(settings, tmp_path / "logs") as children:
        report = orjson.loads(ok(cli(settings, "publish", stdin=lines_of(session, user, 5, 3))))
        assert report["published"] == 5 and report["rejected"] == 0
        got = eventually(lambda: (rows := stored(settings, "--session", session)) and len(rows) == 5 and rows,
                         90, "the session kept around its ERROR")  # fmt: skip
        assert [r["message"] for r in got] == [f"{session} step {i}" for i in range(5)]

        # the same rows in each format, and by SQL
        table = ok(cli(settings, "query", "--session", session, "--format", "table"))
        assert table.splitlines()[0].split()[:3] == ["timestamp", "service", "level"] and "Z " in table
        rows = list(
            csv.DictReader(io.StringIO(ok(cli(settings, "query", "--session", session, "--format", "csv"))))
        )
        assert [r["message"] for r in rows] == [r["message"] for r in got]
        assert orjson.loads(rows[0]["trigger_reasons"]) == ["error"]
        assert [r["message"] for r in stored(settings, "--session", session, "--level", "error")] == [
            f"{session} step 3"
        ]
        sql = f"SELECT count() AS n FROM logs FINAL WHERE SessionId = '{session}'"
        assert "5" in ok(cli(settings, "query", "--sql", sql))
        refused = cli(settings, "query", "--sql", "SELECT * FROM file('/etc/passwd')")
        assert refused.returncode != 0 and b"table function file()" in refused.stderr

        # replay to a file (readable by this account only)
        out = tmp_path / "replay.jsonl"
        replayed = orjson.loads(ok(cli(settings, "replay", "--since", "30m", "--session", session, "--to",
                                       str(out), "--json")))  # fmt: skip
        assert replayed["matched_lines"] == 5 and out.stat().st_mode & 0o777 == 0o600
        assert sorted(orjson.loads(x)["message"] for x in out.read_bytes().splitlines()) == sorted(
            r["message"] for r in got
        )

        # capture a user: the history is kept with reason "capture", beside "error" (history kept)
        captured = orjson.loads(ok(cli(settings, "capture", "--user-id", user, "--lookback", "30m",
                                       "--follow", "2m", "--reason", "ticket 1", "--json")))  # fmt: skip
        assert captured["capture_id"]

        def both_reasons() -> list[dict[str, Any]] | None:
            rows = stored(settings, "--session", session)
            return rows if all(set(r["trigger_reasons"]) >= {"capture", "error"} for r in rows) else None

        eventually(both_reasons, 90, "the capture's reason beside the ERROR's")
        assert len(stored(settings, "--trigger", "capture", "--session", session)) == 5
        assert len(stored(settings, "--trigger", "error", "--session", session)) == 5

        # rules: validate a file, list
        rule = tmp_path / "rule.json"
        rule.write_bytes(orjson.dumps({"id": "smoke-mute", "match": {"all": [{"endpoint": "/health"}]},
                                       "actions": {"drop": True}}))  # fmt: skip
        ok(cli(settings, "rules", "validate", str(rule)))
        ok(cli(settings, "rules", "add", str(rule)))
        assert "smoke-mute" in ok(cli(settings, "rules", "list"))

        # the store is the sink's: a second opener is told who holds it
        busy = cli(settings, "migrate")
        assert busy.returncode != 0 and b"held by another process (PID" in busy.stderr

        # doctor: one line per check, machine-readable
        doctor = cli(settings, "doctor", "--json")
        report = orjson.loads(doctor.stdout)
        names = {c["name"] for c in report["checks"]}
        assert {"broker", "topics"} <= names and doctor.returncode == (0 if report["ok"] else 1), names

        # the worker stopped with SIGTERM exits cleanly; a new one carries on
        worker = children[0]
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(60) == 0, worker.log_file.read_text()[-2000:]
        children[0] = start_child("worker2", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs")
        later = f"{session}-b"
        ok(cli(settings, "publish", stdin=lines_of(later, user, 3, 2)))
        eventually(
            lambda: len(stored(settings, "--session", later)) == 3 or None, 120, "lines after the restart"
        )


def test_migrate_archive_and_the_file_sink(ns: Settings, tmp_path: Path) -> None:
    fresh = ns.model_copy(update={"chdb_path": tmp_path / "fresh-store"})
    first = ok(cli(fresh, "migrate"))
    assert "004_history" in first
    assert "up to date" in ok(cli(fresh, "migrate"))

    settings = ns.model_copy(
        update={
            "archive_dir": tmp_path / "archive",
            "file_sink_dir": tmp_path / "files",
            "primary_sinks": ["clickhouse", "file"],
            "file_sink_rotate_s": 1.0,
        }
    )
    ok(cli(settings, "topics"))
    archive = start_child("archive", ["--log-level", "INFO", "archive"], settings, tmp_path / "logs")
    worker = start_child("worker", ["--log-level", "INFO", "worker"], settings, tmp_path / "logs")
    ingest = start_child("ingest", ["--log-level", "INFO", "ingest"], settings, tmp_path / "logs")
    files = start_child("file-sink", ["--log-level", "INFO", "sink", "file"], settings, tmp_path / "logs")
    children = [archive, worker, ingest, files]
    try:
        session = f"arch-{uuid.uuid4().hex[:6]}"
        ok(cli(settings, "publish", stdin=lines_of(session, "u", 4, 3)))

        def archived() -> list[Path] | None:
            for child in children:
                child.check()
            return sorted((tmp_path / "archive").rglob("*.avro")) or None

        def flushed() -> list[bytes] | None:
            """Lines in the file being written: each flush is a gzip sync point, so readable now."""
            for child in children:
                child.check()
            parts = sorted((tmp_path / "files").glob("*.part"))
            data = b"".join(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(f.read_bytes()) for f in parts)
            lines = data.splitlines()
            return lines if len(lines) >= 4 else None

        assert eventually(archived, 120, "an hourly archive file")
        kept = eventually(flushed, 120, "the file sink's lines")
        assert sorted(orjson.loads(x)["message"] for x in kept) == [f"{session} step {i}" for i in range(4)]
    finally:
        for child in reversed(children):
            child.stop()
    for child in children:  # SIGTERM: each exits cleanly
        assert child.proc.returncode == 0, (child.name, child.log_file.read_text()[-1500:])
    # stopped, the file sink finished its file: complete gzip, mode 0600
    [done] = sorted((tmp_path / "files").glob("*.jsonl.gz"))
    assert len(gzip.decompress(done.read_bytes()).splitlines()) == 4 and done.stat().st_mode & 0o777 == 0o600


def test_the_api_and_otlp_servers_start_answer_and_stop(ns: Settings, tmp_path: Path) -> None:
    settings = ns.model_copy(
        update={
            "api_token": SecretStr("smoke"),
            "api_port": free_port(),
            "otlp_port": free_port(),
            "metrics_port": None,
        }
    )
    ok(cli(settings, "topics"))
    children = [
        start_child("api", ["--log-level", "INFO", "api"], settings, tmp_path / "logs"),
        start_child("otlp", ["--log-level", "INFO", "otlp"], settings, tmp_path / "logs"),
    ]
    try:
        for port in (settings.api_port, settings.otlp_port):

            def healthy(port: int = port) -> bool | None:
                for child in children:
                    child.check()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                        return resp.status == 200 or None
                except OSError:
                    return None

            eventually(healthy, 60, f"/health on {port}")
    finally:
        for child in children:
            child.stop()
    for child in children:
        assert child.proc.returncode == 0, (child.name, child.log_file.read_text()[-1500:])


def test_stack_fetch_and_status(kafka: Settings) -> None:
    fetched = cli(kafka, "stack", "fetch")
    assert fetched.returncode == 0, fetched.stderr.decode()
    status = orjson.loads(ok(cli(kafka, "stack", "status", "--json")))
    assert status["running"] is True


def test_stack_up_down_of_a_broker_of_its_own(kafka: Settings, tmp_path: Path) -> None:
    """A second local broker (own home and ports): `stack up` starts it and creates the topics,
    `stack down` stops it (its process is gone, status says so), and a second `down` has nothing to
    stop."""
    if not kafka.local_broker:
        pytest.skip("starts a local broker; KAFKA_BOOTSTRAP_SERVERS names a cluster")
    own = Settings(
        home=tmp_path / "home", cache_dir=kafka.cache_dir, kafka_port=free_port(pair=True), kafka_heap="256m"
    )
    up = ok(cli(own, "stack", "up"))
    assert "started" in up and "topics created" in up, up
    try:
        status = orjson.loads(ok(cli(own, "stack", "status", "--json")))
        assert status["running"] is True and status["managed"] is True and status["pid"], status
        pid = int(status["pid"])
        from confluent_kafka.admin import AdminClient

        topics = AdminClient(own.kafka_client_config()).list_topics(timeout=10).topics
        assert own.raw_topic in topics and own.sessions_topic in topics
    finally:
        down = ok(cli(own, "stack", "down"))
    assert "kafka stopped" in down
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the broker's process is gone, not just reported stopped
    stopped = cli(own, "stack", "status", "--json")
    assert stopped.returncode == 3 and orjson.loads(stopped.stdout)["running"] is False  # LSB: not running
    assert "nothing to stop" in ok(cli(own, "stack", "down"))
