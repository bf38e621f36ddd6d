"""Compile the window engine (every module of pipeline/engine/) with mypyc, in place.

`make` runs this before tests, the demo and benchmarks. The compiled extensions sit beside the
sources and are ~1.2-1.5x faster; `pipeline/engine/__init__.py` uses them only while the sources
still hash to what was compiled (pipeline/engine/native.sha256), so an edited .py never runs stale
code. Without a C compiler or mypy this prints why and leaves the pure-Python modules in use.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline.engine import LOCK, NATIVE_MODULES, source_hashes  # noqa: E402  (what the import guard checks)

ENGINE = ROOT / "pipeline" / "engine"


def main() -> int:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        print("build_native: no C compiler; the pure-Python window engine stays in use", file=sys.stderr)
        return 0
    try:
        from mypyc.build import mypycify
        from setuptools import setup
    except ImportError as exc:
        print(f"build_native: {exc}; the pure-Python window engine stays in use", file=sys.stderr)
        return 0
    LOCK.unlink(missing_ok=True)  # a half-finished build must not be trusted
    for old in ENGINE.glob("*.so"):
        old.unlink()
    sources = [f"pipeline/engine/{name}.py" for name in NATIVE_MODULES]
    hashes = source_hashes()
    # Build from a scratch directory that links to the package: setuptools would otherwise read
    # (and validate) the project's pyproject.toml, which is not what is being built here.
    work = ROOT / "build" / "native"
    work.mkdir(parents=True, exist_ok=True)
    link = work / "pipeline"
    if not link.is_symlink():
        link.symlink_to(ROOT / "pipeline", target_is_directory=True)
    os.chdir(work)
    try:
        setup(
            name="log-hindsight-native",
            packages=[],
            ext_modules=mypycify(sources, group_name="pipeline.engine.native"),
            script_args=["build_ext", "--inplace", "-q"],
        )
    except (Exception, SystemExit) as exc:  # a failed build must not stop `make test` or the demo
        for half in ENGINE.glob("*.so"):
            half.unlink()
        print(
            f"build_native: compiling failed ({exc!r}); the pure-Python engine stays in use", file=sys.stderr
        )
        return 0
    LOCK.write_text(json.dumps(hashes, indent=2) + "\n")
    print(f"build_native: compiled {', '.join(sources)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
