"""A custom rule predicate for the tests (named in the allow-list)."""

from __future__ import annotations

from typing import Any


def long_message(record: Any) -> bool:
    return len(record["message"]) > 40


def explodes(record: Any) -> bool:
    """Raises on every line whose message says so (a buggy operator predicate)."""
    if "boom" in record["message"]:
        raise RuntimeError("predicate bug")
    return record["level"] == "DEBUG"
