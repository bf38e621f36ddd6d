"""`hindsight doctor` against the real broker: one line per check, failures with fix hints, exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.kafka import ensure_topics
from pipeline.ops.doctor import FAIL, OK, SKIP, WARN, run_checks
from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from tests.conftest import free_port

from .helpers import eventually, pipeline_running

pytestmark = pytest.mark.integration


def by_name(settings: Settings) -> dict[str, tuple[str, str, str]]:
    return {c.name: (c.status, c.detail, c.fix) for c in run_checks(settings, 3.0)}


def test_doctor_finds_missing_topics_then_a_healthy_pipeline(ns: Settings, tmp_path: Path) -> None:
    before = by_name(ns)
    assert before["broker"][0] == OK
    assert before["topics"][0] == FAIL and ns.raw_topic in before["topics"][1]
    assert "hindsight topics" in before["topics"][2]
    assert before["query API"][0] == WARN and "sink" in before["query API"][2]
    assert before["config"][0] == WARN and "HINDSIGHT_API_TOKEN" in before["config"][1]

    ensure_topics(ns)
    with pipeline_running(ns, tmp_path / "logs"):

        def joined() -> dict[str, tuple[str, str, str]] | None:  # each group has its member
            checks = by_name(ns)
            groups = ("worker group", "sink group")
            return checks if all(checks[g][0] == OK for g in groups) else None

        during = eventually(joined, 60, "the worker and sink groups to have joined")
    assert during["topics"][0] == OK and "168 h" in during["topics"][1]
    assert during["worker group"][0] == OK and "1 member(s)" in during["worker group"][1]
    assert during["sink group"][0] == OK
    assert during["store"][0] == OK and "held by a running sink" in during["store"][1]
    assert during["query API"][0] == OK
    assert during["metrics"][0] == SKIP


def test_doctor_cli_on_an_unreachable_broker_fails_fast_with_hints(tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", home=tmp_path, query_port=free_port()
    )
    env = {**settings_env(settings), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.cli", "doctor", "--json", "--timeout", "2"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert checks["broker"]["status"] == FAIL and "KAFKA_BOOTSTRAP_SERVERS" in checks["broker"]["fix"]
    assert checks["topics"]["status"] == SKIP
    assert checks["store"]["status"] == WARN  # fresh chDB dir: reachable, no tables yet
    text = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.cli", "doctor", "--timeout", "1"],
        capture_output=True,
        env=env,
        timeout=60,
    ).stdout.decode()
    assert text.count("\n") == len(checks) and "fail  broker" in text and "(fix: " in text
