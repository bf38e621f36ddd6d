"""The README's Python example runs as written: copied into a script, it gets its INFO line to logs.raw
(with the root logger at its default WARNING, only ERRORs would have gone)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipeline.kafka import ensure_topics
from pipeline.ops.services import settings_env
from pipeline.settings import Settings
from pipeline.wire.raw import RawDecoder
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
