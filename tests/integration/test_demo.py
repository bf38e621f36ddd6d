"""`hindsight demo`, the newcomer's first command, end to end on a small workload: it checks its own
ground truth (it fails if a line that must be kept is missing), prints the commands that give exactly
the rows it shows, and says what to do next."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_the_demo_runs_and_says_what_next(kafka: Settings) -> None:
    env = {**os.environ, **settings_env(kafka), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.cli", "demo", "--sessions", "30"],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "== log-hindsight demo ==" in out and "incidents captured" in out
    assert "$ hindsight query --level ERROR --limit 5" in out  # as run: the table shows at most 5
    assert "== what next ==" in out and "hindsight worker" in out
