"""Per-request log context (contextvars): a web app sets session/user/endpoint once per request and
every line logged inside it, through any of the logging integrations, carries them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pipeline.types import CONTEXT_FIELDS

_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("hindsight_log_context", default=None)


def current() -> dict[str, Any]:
    """The fields bound in this task or thread (a copy is not needed: the dict is never mutated)."""
    return _CONTEXT.get() or {}


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Bind context fields (session_id, user_id, endpoint, transaction_id, trace_id, ...) for the block;
    nested blocks add to the outer one and restore it on exit. Unknown names become attributes."""
    merged = {**current(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield merged
    finally:
        _CONTEXT.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context until it ends (e.g. a user id learned mid-request)."""
    _CONTEXT.set({**current(), **{k: v for k, v in fields.items() if v is not None}})


def split(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(context fields, the rest)."""
    ctx = {k: v for k, v in fields.items() if k in CONTEXT_FIELDS}
    return ctx, {k: v for k, v in fields.items() if k not in CONTEXT_FIELDS}
