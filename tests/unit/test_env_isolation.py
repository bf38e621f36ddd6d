"""The shell's project variables do not reach the tests: with a token, a store URL and a cluster set,
the test session's settings are the defaults, and only the kafka fixture sees the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import json
from tests import conftest
from pipeline.settings import Settings
s = Settings()
print(json.dumps({"token": s.api_token is not None, "store": s.clickhouse_url, "cluster": conftest.CLUSTER,
                  "bootstrap": s.kafka_bootstrap_servers, "limit": s.http_max_body_bytes}))
"""


def test_project_variables_are_removed_for_the_session() -> None:
    env = {
        **os.environ,
        "HINDSIGHT_API_TOKEN": "from-the-shell",
        "CLICKHOUSE_URL": "https://prod.example:8443",
        "KAFKA_BOOTSTRAP_SERVERS": "broker.example:9092",
        "hindsight_http_max_body_bytes": "17",
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["token"] is False and got["store"] is None and got["bootstrap"] is None
    assert got["cluster"] == "broker.example:9092" and got["limit"] != 17


def test_a_missing_tool_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import unavailable

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="kubectl not installed"):
        unavailable("kubectl not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: a test may not skip"):
        unavailable("kubectl not installed")
