"""Optional dependencies (pip extras): which extra brings which module; one clear line when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.errors import ConfigError

# top-level module -> the extra of log-hindsight that installs it (pyproject.toml, optional-dependencies)
EXTRAS = {
    "chdb": "embedded",
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "redis": "redis",
    "grpc": "grpc",
}


def install_hint(extra: str) -> str:
    return f"pip install 'log-hindsight[{extra}]'"


def missing(exc: ModuleNotFoundError, purpose: str) -> ConfigError | None:
    """The one-line error for a module an extra brings, or None when `exc` is about another module
    (a real bug, which must keep its traceback)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return ConfigError(f"{purpose} needs the {extra!r} extra, which is not installed: {install_hint(extra)}")


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` (brought by an extra), or raise the ConfigError naming the pip command."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        error = missing(exc, purpose)
        if error is None:
            raise
        raise error from None
