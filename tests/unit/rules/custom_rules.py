"""A custom rule predicate for the tests (named in the allow-list)."""

from __future__ import annotations

from typing import Any


def long_message(record: Any) -> bool:
    return len(record["message"]) > 40
