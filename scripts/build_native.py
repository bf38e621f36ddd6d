"""Compile the worker's hot pure-Python modules (window, sketch) with mypyc, in place.

`make` runs this before tests, the demo and benchmarks. The compiled extension sits beside the
source and is ~1.2-1.5x faster in the window engine; `pipeline/__init__.py` uses it only while the
sources still hash to what was compiled (pipeline/native.sha256), so an edited .py never runs stale
code. Without a C compiler or mypy this prints why and leaves the pure-Python modules in use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import NATIVE_MODULES  # noqa: E402  (the list the import guard checks)

LOCK = ROOT / "pipeline" / "native.sha256"


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
    for old in (ROOT / "pipeline").glob("*.so"):
        old.unlink()
    sources = [f"pipeline/{name}.py" for name in NATIVE_MODULES]
    hashes = {
        m: hashlib.sha256((ROOT / "pipeline" / f"{m}.py").read_bytes()).hexdigest() for m in NATIVE_MODULES
    }
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
            ext_modules=mypycify(sources, group_name="pipeline.native"),
            script_args=["build_ext", "--inplace", "-q"],
        )
    except (Exception, SystemExit) as exc:  # a failed build must not stop `make test` or the demo
        for half in (ROOT / "pipeline").glob("*.so"):
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
