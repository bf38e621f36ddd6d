"""Compile the window engine (every module of pipeline/engine/) with mypyc, and the C forms of
ingest's hot loops (pipeline/compiled.py's SOURCES), in place.

`make` runs this before tests, the demo and benchmarks. The compiled extensions sit beside the
sources and are ~1.2-1.5x faster; `pipeline/engine/__init__.py` uses them only while the sources
still hash to what was compiled (pipeline/engine/native.sha256), so an edited .py never runs stale
code. Each C module carries its source's sha256 and is used only while that matches (the same
guard). Without a C compiler or mypy this prints why and leaves the pure-Python modules in use.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline.compiled import SOURCES, source_hash  # noqa: E402
from pipeline.engine import LOCK, NATIVE_MODULES, source_hashes  # noqa: E402  (what the import guard checks)

ENGINE = ROOT / "pipeline" / "engine"


def main() -> int:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        print("build_native: no C compiler; the pure-Python window engine stays in use", file=sys.stderr)
        return 0
    build_c_modules()
    return build_engine()


def build_c_modules() -> None:
    """Each C module with its source's sha256 (a failure leaves that module's Python form in use)."""
    from setuptools import Extension, setup

    for module, source in SOURCES.items():
        target_dir = source.parent
        for old in target_dir.glob(f"{source.stem}.*.so"):
            old.unlink()
        ext = Extension(
            module,
            sources=[str(source.relative_to(ROOT))],
            define_macros=[("HINDSIGHT_SOURCE_SHA256", f'"{source_hash(module)}"')],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        )
        cwd = os.getcwd()
        os.chdir(_scratch())  # not the project's directory: setuptools would read its pyproject.toml
        try:
            setup(
                name="log-hindsight-c",
                packages=[],
                ext_modules=[ext],
                script_args=["build_ext", "--inplace", "-q", "--build-temp", "c"],
            )
            print(f"build_native: compiled {source.relative_to(ROOT)}", file=sys.stderr)
        except (Exception, SystemExit) as exc:
            for half in target_dir.glob(f"{source.stem}.*.so"):
                half.unlink()
            print(f"build_native: compiling {source.name} failed ({exc!r}); its Python form stays in use",
                  file=sys.stderr)  # fmt: skip
        finally:
            os.chdir(cwd)


def _scratch() -> Path:
    """A scratch directory that links to the package: setuptools would otherwise read (and validate)
    the project's pyproject.toml, which is not what is being built here."""
    work = ROOT / "build" / "native"
    work.mkdir(parents=True, exist_ok=True)
    link = work / "pipeline"
    if not link.is_symlink():
        link.symlink_to(ROOT / "pipeline", target_is_directory=True)
    return work


def build_engine() -> int:
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
    os.chdir(_scratch())
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
