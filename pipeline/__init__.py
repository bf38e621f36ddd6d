"""log-hindsight: keep every log line briefly in Kafka, store the context around incidents."""

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

__version__ = "0.1.0"

# The window engine's modules may be compiled by scripts/build_native.py (mypyc). The compiled form
# is used only while every compiled source still hashes to what was built; otherwise (or with
# HINDSIGHT_NATIVE=0) all of them load from source, since compiled modules call each other directly.
NATIVE_MODULES = ("window", "sketch")
_HERE = Path(__file__).resolve().parent


def _native_state() -> str:
    """'compiled', 'absent', 'disabled' or 'stale' (a source changed after the build)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    built = [m for m in NATIVE_MODULES if any((_HERE / f"{m}{s}").exists() for s in suffixes)]
    if not built:
        return "absent"
    if os.environ.get("HINDSIGHT_NATIVE", "1") == "0":
        return "disabled"
    try:
        recorded = json.loads((_HERE / "native.sha256").read_text())
    except (OSError, ValueError):
        return "stale"
    for m in NATIVE_MODULES:
        if recorded.get(m) != hashlib.sha256((_HERE / f"{m}.py").read_bytes()).hexdigest():
            return "stale"
    return "compiled"


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the engine's modules as .py files, ahead of the compiled extensions beside them."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in NATIVE_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


NATIVE = _native_state()
if NATIVE in ("stale", "disabled"):
    sys.meta_path.insert(0, _FromSource())
    if NATIVE == "stale":
        logging.getLogger(__name__).warning(
            "compiled window engine is older than its source; running the source (make native rebuilds it)"
        )
