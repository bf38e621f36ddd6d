"""The mypyc-compiled window engine: used only while its sources are unchanged, and equal to the source."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import pipeline
from pipeline.ops.workload import generate
from pipeline.wire.raw import RawEncoder
from tests.conftest import unavailable

PACKAGE = Path(pipeline.__file__).resolve().parent
HOT = "partition"  # the engine module (the line loop) whose file the child reports
COMPILED = any((PACKAGE / "engine" / f"{HOT}{s}").exists() for s in importlib.machinery.EXTENSION_SUFFIXES)


@pytest.fixture
def built() -> None:
    if not COMPILED:
        unavailable("no compiled engine here (make native builds it)")


needs_build = pytest.mark.usefixtures("built")

# Runs in a child: which form of the engine loaded, and what it emitted for the messages in argv[1].
CHILD = """
import sys, orjson, pipeline.engine, pipeline.engine.partition as w
from pipeline.worker.processor import RawProcessor
from pipeline.settings import Settings
proc = RawProcessor(Settings(key_budget_lps=1e9, global_budget_lps=1e9, stats_window_s=5.0))
curated, stats = [], []
for offset, value in enumerate(orjson.loads(open(sys.argv[1], "rb").read())):
    out = proc.handle("logs.raw", offset % 3, offset, value.encode())
    curated += [r for rows in out.curated.values() for r in rows]
    stats += out.stats
tick = proc.tick(int(sys.argv[2]))  # closes every window and follow-up
curated += [r for rows in tick.curated.values() for r in rows]
stats += tick.stats
print(orjson.dumps({"native": pipeline.engine.NATIVE, "file": w.__file__, "curated": curated, "stats": stats,
                    "evicted": proc.stats().windows.evicted_lines}).decode())
"""


def run_child(tmp_path: Path, package_root: Path, native: bool) -> dict[str, object]:
    data = tmp_path / "values.json"
    if not data.exists():  # one workload for every child of a test (its timestamps follow the clock)
        work = generate(sessions=300, requests_per_session=6, seed=11)
        values = [
            RawEncoder("json").encode(work.lines[i : i + 50]).decode() for i in range(0, len(work.lines), 50)
        ]
        data.write_bytes(orjson.dumps(values))
        (tmp_path / "tick").write_text(str(max(r["timestamp"] for r in work.lines) + 3_600_000_000))
    env = {**os.environ, "PYTHONPATH": str(package_root), "HINDSIGHT_NATIVE": "1" if native else "0"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(data),
            (tmp_path / "tick").read_text(),
        ],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out: dict[str, object] = orjson.loads(proc.stdout)
    out["stderr"] = proc.stderr.decode()
    return out


@needs_build
def test_compiled_and_source_engines_emit_the_same(tmp_path: Path) -> None:
    compiled = run_child(tmp_path, PACKAGE.parent, native=True)
    source = run_child(tmp_path, PACKAGE.parent, native=False)
    assert compiled["native"] == "compiled" and not str(compiled["file"]).endswith(".py")
    assert source["native"] == "disabled" and str(source["file"]).endswith(f"{HOT}.py")
    assert compiled["curated"] and compiled["stats"]  # the workload triggers and closes windows
    for key in ("curated", "stats", "evicted"):
        assert compiled[key] == source[key], key


@needs_build
def test_an_edited_source_is_run_instead_of_its_stale_build(tmp_path: Path) -> None:
    copy = tmp_path / "tree"
    shutil.copytree(PACKAGE, copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PACKAGE.parent / "schemas", copy / "schemas")
    window = copy / "pipeline" / "engine" / f"{HOT}.py"
    window.write_text(window.read_text() + "\nEDITED_AFTER_BUILD = True\n")
    out = run_child(tmp_path, copy, native=True)
    assert out["native"] == "stale" and out["file"] == str(window)
    assert "older than its source" in str(out["stderr"])
    assert out["curated"]  # and the engine still runs, from source


@needs_build
def test_a_build_without_its_hash_record_is_not_trusted(tmp_path: Path) -> None:
    copy = tmp_path / "tree"
    shutil.copytree(PACKAGE, copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PACKAGE.parent / "schemas", copy / "schemas")
    (copy / "pipeline" / "engine" / "native.sha256").unlink()
    out = run_child(tmp_path, copy, native=True)
    assert out["native"] == "stale" and str(out["file"]).endswith(f"{HOT}.py")


def test_without_a_build_the_source_runs(tmp_path: Path) -> None:
    copy = tmp_path / "tree"
    shutil.copytree(
        PACKAGE, copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.so", "native.sha256")
    )
    shutil.copytree(PACKAGE.parent / "schemas", copy / "schemas")
    out = run_child(tmp_path, copy, native=True)
    assert out["native"] == "absent" and str(out["file"]).endswith(f"{HOT}.py")
    assert out["curated"] and out["stderr"] == ""


@pytest.mark.parametrize(
    ("state", "status", "words"),
    [
        ("compiled", "ok", "compiled with mypyc"),
        ("absent", "ok", "not compiled"),
        ("disabled", "ok", "HINDSIGHT_NATIVE=0"),
        ("stale", "warn", "older than the source"),
    ],
)
def test_doctor_names_the_engine_that_runs(
    monkeypatch: pytest.MonkeyPatch, state: str, status: str, words: str
) -> None:
    from pipeline import engine
    from pipeline.ops import doctor

    monkeypatch.setattr(engine, "NATIVE", state)
    check = doctor._engine()
    assert (check.name, check.status) == ("window engine", status) and words in check.detail
    assert check.fix == ("make native" if state == "stale" else "")
