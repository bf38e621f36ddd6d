"""The README's examples run as written: the Python example, copied into a script, gets its INFO line to
logs.raw (with the root logger at its default WARNING, only ERRORs would have gone); the quick start's
kcat lines and query command, run by a shell, store and print the session's lines."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.kafka import ensure_topics
from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from pipeline.wire.raw import RawDecoder
from tests.conftest import unavailable
from tests.integration.helpers import consume_all

REPO = Path(__file__).resolve().parents[2]


def test_the_python_example_as_written_publishes_info_lines(ns: Settings, tmp_path: Path) -> None:
    ensure_topics(ns)
    [block] = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    # docs/operations.md shows the same example
    assert block in (REPO / "docs" / "operations.md").read_text()
    script = tmp_path / "example.py"
    script.write_text(block)
    env = {**settings_env(ns), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [msg] = consume_all(ns, ns.raw_topic, 1)
    [line], errors = RawDecoder(ns.max_record_bytes).decode(msg.value())  # in the publisher's wire format
    assert not errors
    assert (line["level"], line["message"], line["session_id"]) == ("INFO", "paid", "s-42")


def test_the_quick_start_shell_example_as_written(ns: Settings, tmp_path: Path) -> None:
    """The README's kcat lines, run by a shell as written (only the broker and topic names are this
    test's), reach the store through the running pipeline: one line unkeyed without a timestamp, one
    keyed by a pod with its own time; the README's query command then prints both."""
    import json
    import os
    import shlex
    import time

    from tests.integration.helpers import pipeline_running

    if shutil.which("kcat") is None:
        unavailable("kcat (scripts/ensure-services.sh installs it)")
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    [block] = [b for b in blocks if "kcat -P" in b]
    publish = [ln for ln in block.splitlines() if "kcat -P" in ln]
    [query] = [ln for ln in block.splitlines() if ln.startswith("hindsight query")]
    assert len(publish) == 2 and "-k " not in publish[0] and "timestamp" not in publish[0]
    assert "-k " in publish[1] and "timestamp" in publish[1]
    bootstrap = ns.bootstrap
    session = f"s-42-{ns.app_id}"
    env = {**os.environ, **settings_env(ns), "PYTHONPATH": str(REPO)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    with pipeline_running(ns, tmp_path / "logs"):
        for line in publish:
            line = line.replace("127.0.0.1:9092", bootstrap).replace("-t logs.raw", f"-t {ns.raw_topic}")
            line = line.replace("s-42", session)
            done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        command = shlex.split(query.replace("s-42", session))
        deadline = time.monotonic() + 120
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(rows) < 2:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            rows = [json.loads(x) for x in done.stdout.splitlines() if x.strip()]
            time.sleep(1)
    assert sorted((r["level"], r["message"], r["service"]) for r in rows) == [
        ("ERROR", "boom", "legacy"),
        ("INFO", "retried", "legacy"),
    ]
    assert all(r["session_id"] == session and "T" in str(r["timestamp"]) for r in rows)
