"""The window and trigger engine: buffers, triggers, budgets, window statistics. Pure logic: no Kafka,
Faust or HTTP imports (an import-linter contract in `make test` keeps it so).

Its modules may be compiled together by scripts/build_native.py (mypyc). The compiled form is used
only while every compiled source still hashes to what was built (native.sha256 beside them);
otherwise, or with HINDSIGHT_NATIVE=0, all of them load from source, since compiled modules call
each other directly and a mix would run stale code.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
# Every module of this package but this one: the compiled group.
NATIVE_MODULES = tuple(sorted(p.stem for p in HERE.glob("*.py") if p.stem != "__init__"))
LOCK = HERE / "native.sha256"


def source_hashes() -> dict[str, str]:
    """The sha256 of each engine module's source, as the build records it."""
    return {m: hashlib.sha256((HERE / f"{m}.py").read_bytes()).hexdigest() for m in NATIVE_MODULES}


def _native_state() -> str:
    """'compiled', 'absent', 'disabled' or 'stale' (a source changed after the build)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    built = [m for m in NATIVE_MODULES if any((HERE / f"{m}{s}").exists() for s in suffixes)]
    if not built:
        return "absent"
    if os.environ.get("HINDSIGHT_NATIVE", "1") == "0":
        return "disabled"
    try:
        recorded = json.loads(LOCK.read_text())
    except (OSError, ValueError):
        return "stale"
    return "compiled" if recorded == source_hashes() else "stale"


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the engine's modules as .py files, ahead of the compiled extensions beside them."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in NATIVE_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, HERE / f"{name}.py")


NATIVE = _native_state()
if NATIVE in ("stale", "disabled"):
    sys.meta_path.insert(0, _FromSource())
    if NATIVE == "stale":
        logging.getLogger(__name__).warning(
            "compiled window engine is older than its source; running the source (make native rebuilds it)"
        )
