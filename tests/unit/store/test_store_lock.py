"""One process per embedded store: a second opener gets a clear StoreBusy naming the holder's PID,
before chDB is touched (it would print its internals and fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import StoreBusy
from pipeline.settings import Settings
from pipeline.store.clickhouse import open_client

HOLDER = """
import sys, time
from pathlib import Path
from pipeline.settings import Settings
from pipeline.store.clickhouse import open_client
client = open_client(Settings(chdb_path=Path(sys.argv[1])))
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_told_who_holds_the_store(tmp_path: Path) -> None:
    store = tmp_path / "chdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusy, match=rf"held by another process \(PID {holder.pid}\)"):
            open_client(Settings(chdb_path=store))
    finally:
        holder.kill()
        holder.wait(10)


def test_the_hold_ends_with_the_client(tmp_path: Path) -> None:
    """`hindsight doctor` or a query opens the store for a moment; then a sink must be able to take it."""
    store = tmp_path / "chdb"
    client = open_client(Settings(chdb_path=store))
    client.close()
    del client
    holder = subprocess.run(
        [sys.executable, "-c", HOLDER.replace("time.sleep(60)", ""), str(store)],
        capture_output=True, text=True, timeout=60, cwd=Path.cwd(),
    )  # fmt: skip
    assert holder.stdout.strip() == "held", holder.stderr[-2000:]
