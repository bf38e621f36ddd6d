"""Optional C forms of hot loops (pipeline/**/_*.c), loaded only while they match their source.

scripts/build_native.py compiles each `_name.c` beside its package's Python with the source's sha256
in the module's SOURCE_SHA256. `load` returns the module only while that still matches the .c file,
so an edited source never runs stale code; without a build, with another source, or with
HINDSIGHT_NATIVE=0, the caller's pure-Python form runs (tests run both and compare them).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
# the C sources, as module name -> file (the build compiles exactly these)
SOURCES = {
    "pipeline.wire._frames": ROOT / "wire" / "_frames.c",
    "pipeline.ingest._route": ROOT / "ingest" / "_route.c",
}


def source_hash(module: str) -> str | None:
    """The sha256 of the module's C source, or None when the source is not installed (nothing runs)."""
    try:
        return hashlib.sha256(SOURCES[module].read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def built(module: str) -> ModuleType | None:
    """The compiled module if it is built from its current source, whatever HINDSIGHT_NATIVE says
    (the tests that compare both forms call it)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    expected = source_hash(module)
    return mod if expected is not None and vars(mod).get("SOURCE_SHA256") == expected else None


def state(module: str) -> str:
    """compiled (built from this source), absent (not built), stale (built from another) or disabled."""
    if os.environ.get("HINDSIGHT_NATIVE", "1") == "0":
        return "disabled"
    try:
        importlib.import_module(module)
    except ImportError:
        return "absent"
    return "compiled" if built(module) is not None else "stale"


def load(module: str) -> ModuleType | None:
    """The compiled module while it is built from its current source and not disabled, else None."""
    current = state(module)
    if current == "stale":
        log.warning("compiled module is older than its source, its Python form runs module=%s", module)
    return built(module) if current == "compiled" else None
